/* getpid through the system-call path, timed with rdtsc (under QEMU
 * -icount the TSC counts guest instructions). Prints the median of 201
 * samples of 100 calls each, per call. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <x86intrin.h>

static int cmp(const void *a, const void *b) {
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    enum { SAMPLES = 201, CALLS = 100 };
    static unsigned long s[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        unsigned long t0 = __rdtsc();
        for (int j = 0; j < CALLS; j++) syscall(SYS_getpid);
        unsigned long t1 = __rdtsc();
        s[i] = (t1 - t0) / CALLS;
    }
    qsort(s, SAMPLES, sizeof s[0], cmp);
    printf("getpid_per_call_median %lu\n", s[SAMPLES / 2]);
    return 0;
}
