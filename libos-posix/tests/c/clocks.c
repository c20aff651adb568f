/* Clocks: monotonic order, realtime plausibility, sleeping, bad arguments. */
#include <errno.h>
#include <stdio.h>
#include <time.h>

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    struct timespec a, b, r;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("monotonic does not go back: %d\n", ns(b) >= ns(a));
    clock_gettime(CLOCK_REALTIME, &r);
    printf("realtime after 2020: %d\n", r.tv_sec > 1577836800);
    printf("nsec in range: %d\n", r.tv_nsec >= 0 && r.tv_nsec < 1000000000);
    printf("getres ok: %d\n", clock_getres(CLOCK_MONOTONIC, &r) == 0 && ns(r) > 0);
    struct timespec d = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    int s = nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("nanosleep 20ms: ret %d, slept enough: %d\n", s, ns(b) - ns(a) >= 20000000);
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec until = a;
    until.tv_nsec += 10 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    int c = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("clock_nanosleep absolute: ret %d, reached: %d\n", c, ns(b) >= ns(until));
    struct timespec bad = {0, 1000000000};
    errno = 0;
    int e1 = nanosleep(&bad, NULL);
    printf("nanosleep bad nsec: %d EINVAL=%d\n", e1, errno == EINVAL);
    errno = 0;
    int e2 = clock_gettime(12345, &r);
    printf("gettime bad clock: %d EINVAL=%d\n", e2, errno == EINVAL);
    printf("time() agrees with realtime: %d\n", time(NULL) >= 1577836800);
    return 0;
}
