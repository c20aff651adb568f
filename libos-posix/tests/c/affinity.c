/* sched_getaffinity/sched_setaffinity of the process itself, the mask a
 * child inherits, and the errors (EINVAL, ESRCH). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    cpu_set_t s;
    CPU_ZERO(&s);
    int r = sched_getaffinity(0, sizeof s, &s);
    printf("get: %d, core 0 in it %d, at least one %d\n", r, CPU_ISSET(0, &s), CPU_COUNT(&s) >= 1);
    long raw = syscall(SYS_sched_getaffinity, 0, sizeof s, &s);
    printf("raw get: at least 8 bytes %d\n", raw >= 8 && raw % 8 == 0);
    CPU_ZERO(&s);
    CPU_SET(0, &s);
    r = sched_setaffinity(0, sizeof s, &s);
    printf("set core 0: %d\n", r);
    CPU_ZERO(&s);
    sched_getaffinity(getpid(), sizeof s, &s);
    printf("now: core 0 %d, count %d\n", CPU_ISSET(0, &s), CPU_COUNT(&s));
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        cpu_set_t k;
        CPU_ZERO(&k);
        sched_getaffinity(0, sizeof k, &k);
        _exit(CPU_COUNT(&k) == 1 && CPU_ISSET(0, &k) ? 42 : 1);
    }
    int st;
    waitpid(c, &st, 0);
    printf("child inherits it: %d\n", WEXITSTATUS(st) == 42);
    CPU_ZERO(&s);
    r = sched_setaffinity(0, sizeof s, &s);
    printf("empty set: %d EINVAL %d\n", r, errno == EINVAL);
    raw = syscall(SYS_sched_getaffinity, 0, 4, &s);
    printf("4-byte get: %ld EINVAL %d\n", raw, errno == EINVAL);
    CPU_SET(0, &s);
    r = sched_setaffinity(999999, sizeof s, &s);
    printf("no such pid: %d ESRCH %d\n", r, errno == ESRCH);
    return 0;
}
