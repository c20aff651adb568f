/*
 * workloads: issue 17's POSIX workloads, timed the same way on both
 * systems by this one unmodified static binary.
 *
 *     workloads PREFIX [SAMPLES]
 *
 * For each workload: one untimed warm-up run, then SAMPLES (default 5)
 * timed runs. A run is timed with `rdtsc` from just before the parent's
 * `fork` to just after its `waitpid` returns, so every core's work (the
 * children's included) counts; under `-icount shift=0` the difference is
 * guest instructions. Prints per workload either
 *
 *     bench {"name":"PREFIX_W","unit":"cycles","median":..,"p99":..,"samples":N}
 *
 * (nearest-rank median and p99, as libos-async's `bench::percentile`) or,
 * when the system cannot run it,
 *
 *     bench-unsupported PREFIX_W: WHAT: STRERROR
 *
 * (for instance `fork: Function not implemented` on a libOS without fork):
 * never a made-up figure. A run whose child exits non-zero or whose output
 * check fails is reported the same way ("... exit status N").
 *
 * The workloads (busybox is the unmodified busybox-static binary at
 * /bin/busybox; PATH=/bin must hold its applet links):
 *   busybox_true      busybox true
 *   sh_echo_wc_20     sh -c 'echo hello | wc -c >/dev/null; ...' (20 times)
 *   seq_sort_sha256   sh -c 'seq 1 5000 | sort -rn | sha256sum >/dev/null'
 *   sh_while_1000     sh -c 'i=0; while [ $i -lt 1000 ]; do i=$((i+1)); done'
 *   gzip_1m           sh -c 'head -c 1048576 /dev/zero | gzip -c | gunzip -c | wc -c >/dev/null'
 *   pipe_64k_per_kib  16 MiB through a pipe in 64 KiB writes, the writer
 *                     (parent) pinned to core 0 and the reader (child) to
 *                     core 1; the figure is per KiB
 *
 * Built with `musl-gcc -static -O2 -Wall -Wextra -Werror` by xtask
 * (xtask/src/workloads.rs).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SAMPLES 100
#define PIPE_TOTAL (16u << 20)
#define PIPE_CHUNK (64u << 10)

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t percentile(const uint64_t *sorted, size_t n, size_t pct)
{
    size_t rank = (pct * n + 99) / 100;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static const char *prefix;
static int failures;

static void report(const char *name, uint64_t *s, size_t n)
{
    qsort(s, n, sizeof *s, cmp_u64);
    printf("bench {\"name\":\"%s_%s\",\"unit\":\"cycles\",\"median\":%llu,\"p99\":%llu,"
           "\"samples\":%zu}\n",
           prefix, name, (unsigned long long)percentile(s, n, 50),
           (unsigned long long)percentile(s, n, 99), n);
    fflush(stdout);
}

static void unsupported(const char *name, const char *what, int err)
{
    printf("bench-unsupported %s_%s: %s: %s\n", prefix, name, what, strerror(err));
    fflush(stdout);
    failures++;
}

static char *const env[] = {"PATH=/bin", NULL};

/* One run of `argv`: fork, execve, waitpid. 0, or the failing step (and
 * errno / the exit status in *err). */
static const char *run_once(char *const argv[], int *err)
{
    pid_t pid = fork();
    if (pid < 0) {
        *err = errno;
        return "fork";
    }
    if (pid == 0) {
        execve(argv[0], argv, env);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        *err = errno;
        return "waitpid";
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        *err = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return "exit status";
    }
    return 0;
}

static void workload(const char *name, char *const argv[], size_t n)
{
    uint64_t s[MAX_SAMPLES];
    for (size_t i = 0; i <= n; i++) {
        int err = 0;
        uint64_t t0 = rdtsc();
        const char *bad = run_once(argv, &err);
        uint64_t t1 = rdtsc();
        if (bad) {
            if (strcmp(bad, "exit status") == 0) {
                printf("bench-unsupported %s_%s: exit status %d\n", prefix, name, err);
                fflush(stdout);
                failures++;
            } else {
                unsupported(name, bad, err);
            }
            return;
        }
        if (i > 0)
            s[i - 1] = t1 - t0;
    }
    report(name, s, n);
}

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

static char chunk[PIPE_CHUNK];

/* 16 MiB through a pipe, writer on core 0, reader on core 1; per KiB. */
static void pipe_throughput(size_t n)
{
    const char *name = "pipe_64k_per_kib";
    uint64_t s[MAX_SAMPLES];
    for (size_t i = 0; i <= n; i++) {
        int fds[2];
        if (pin(0) != 0) {
            unsupported(name, "sched_setaffinity", errno);
            return;
        }
        if (pipe(fds) != 0) {
            unsupported(name, "pipe", errno);
            return;
        }
        uint64_t t0 = rdtsc();
        pid_t pid = fork();
        if (pid < 0) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            unsupported(name, "fork", e);
            return;
        }
        if (pid == 0) {
            close(fds[1]);
            if (pin(1) != 0)
                _exit(2);
            size_t got = 0;
            for (;;) {
                ssize_t r = read(fds[0], chunk, sizeof chunk);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            _exit(got == PIPE_TOTAL ? 0 : 1);
        }
        close(fds[0]);
        size_t sent = 0;
        while (sent < PIPE_TOTAL) {
            ssize_t w = write(fds[1], chunk, PIPE_CHUNK);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            sent += (size_t)w;
        }
        close(fds[1]);
        int status;
        pid_t waited = waitpid(pid, &status, 0);
        uint64_t t1 = rdtsc();
        if (waited != pid) {
            unsupported(name, "waitpid", errno);
            return;
        }
        if (sent != PIPE_TOTAL || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("bench-unsupported %s_%s: %zu of %u bytes written, reader status %#x\n",
                   prefix, name, sent, PIPE_TOTAL, status);
            fflush(stdout);
            failures++;
            return;
        }
        if (i > 0)
            s[i - 1] = (t1 - t0) / (PIPE_TOTAL >> 10);
    }
    report(name, s, n);
}

#define BB "/bin/busybox"
#define ECHO_WC "echo hello | wc -c >/dev/null; "
#define ECHO_WC_5 ECHO_WC ECHO_WC ECHO_WC ECHO_WC ECHO_WC

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: workloads PREFIX [SAMPLES]\n");
        return 2;
    }
    prefix = argv[1];
    size_t n = argc > 2 ? (size_t)atol(argv[2]) : 5;
    if (n < 1)
        n = 1;
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;

    char *const bb_true[] = {BB, "true", NULL};
    char *const echo_wc[] = {BB, "sh", "-c", ECHO_WC_5 ECHO_WC_5 ECHO_WC_5 ECHO_WC_5, NULL};
    char *const seq_sort[] = {BB, "sh", "-c", "seq 1 5000 | sort -rn | sha256sum >/dev/null", NULL};
    char *const loop[] = {BB, "sh", "-c", "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); done",
                          NULL};
    char *const gzip[] = {
        BB, "sh", "-c",
        "head -c 1048576 /dev/zero | gzip -c | gunzip -c | wc -c >/dev/null", NULL};

    workload("busybox_true", bb_true, n);
    workload("sh_echo_wc_20", echo_wc, n);
    workload("seq_sort_sha256", seq_sort, n);
    workload("sh_while_1000", loop, n);
    workload("gzip_1m", gzip, n);
    pipe_throughput(n);
    printf("workloads done (%d unsupported)\n", failures);
    fflush(stdout);
    return 0;
}
