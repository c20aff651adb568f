/* Pipe throughput within one process: write 64 KiB into a pipe, read the
 * 64 KiB back, timed with rdtsc (under QEMU -icount the TSC counts guest
 * instructions). Prints the median of 101 samples, per KiB moved (one
 * write and one read of each KiB). Not the figure (two processes
 * on two cores): that needs fork and shared frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <x86intrin.h>

static int cmp(const void *a, const void *b) {
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    enum { SAMPLES = 101, SIZE = 65536 };
    static unsigned long s[SAMPLES];
    static char out[SIZE], in[SIZE];
    int p[2];
    if (pipe(p) != 0) return 1;
    memset(out, 'x', sizeof out);
    for (int i = 0; i < SAMPLES; i++) {
        unsigned long t0 = __rdtsc();
        if (write(p[1], out, SIZE) != SIZE) return 2;
        size_t got = 0;
        while (got < SIZE) {
            ssize_t n = read(p[0], in + got, SIZE - got);
            if (n <= 0) return 3;
            got += n;
        }
        unsigned long t1 = __rdtsc();
        s[i] = (t1 - t0) / (SIZE / 1024);
    }
    qsort(s, SAMPLES, sizeof s[0], cmp);
    printf("pipe_same_process_per_kib_median %lu\n", s[SAMPLES / 2]);
    return memcmp(in, out, SIZE) != 0;
}
