/* fork + execve + exit + wait of `busybox true`, timed with rdtsc around
 * the whole (under QEMU -icount shift=0 the TSC counts guest instructions,
 * every core's: the child's run on another core counts too), as issue 17
 * measures Linux. Prints each of N runs and their median. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

static int cmp(const void *a, const void *b) {
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    enum { RUNS = 7 };
    const char *prog = argc > 1 ? argv[1] : "/bin/busybox";
    static unsigned long s[RUNS];
    for (int i = 0; i < RUNS; i++) {
        unsigned long t0 = __rdtsc();
        pid_t c = fork();
        if (c == 0) {
            char *av[] = {"busybox", "true", NULL};
            char *ev[] = {NULL};
            execve(prog, av, ev);
            _exit(127);
        }
        int st;
        if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("run %d failed\n", i);
            return 1;
        }
        s[i] = __rdtsc() - t0;
        printf("run %d: %lu\n", i, s[i]);
    }
    qsort(s, RUNS, sizeof s[0], cmp);
    printf("busybox_true_fork_exec_wait_median %lu\n", s[RUNS / 2]);
    return 0;
}
