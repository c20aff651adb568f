/* Pipe throughput between two processes on two cores: the child writes
 * 16 MiB in 64 KiB writes, the parent reads it all; timed with rdtsc in
 * the parent (under QEMU -icount the TSC counts guest instructions).
 * Prints the total per KiB moved. Not registered in benches/registry.toml
 * yet (a by-hand figure: `cargo xtask posix --icount --root DIR -- /xpipebench`). */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

int main(void) {
    enum { SIZE = 65536, ROUNDS = 256 };
    static char out[SIZE], in[SIZE];
    int p[2];
    if (pipe(p) != 0) return 1;
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        memset(out, 'x', sizeof out);
        for (int i = 0; i < ROUNDS; i++)
            if (write(p[1], out, SIZE) != SIZE) _exit(2);
        _exit(0);
    }
    close(p[1]);
    unsigned long t0 = __rdtsc(), total = 0;
    for (;;) {
        ssize_t n = read(p[0], in, SIZE);
        if (n < 0) return 3;
        if (n == 0) break;
        total += n;
    }
    unsigned long t1 = __rdtsc();
    int st = 0;
    waitpid(c, &st, 0);
    printf("pipe_cross_process_per_kib %lu (bytes %lu, child status %d)\n", (t1 - t0) / (total / 1024 ? total / 1024 : 1), total, st);
    return total != (unsigned long)SIZE * ROUNDS;
}
