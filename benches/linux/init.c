/*
 * benchinit: the Linux guest's /init for `cargo xtask bench --vs linux`.
 *
 * Runs the Linux counterpart of each of our benchmarks that has one and
 * prints `bench {"name":..,"unit":"cycles","median":..,"p99":..,"samples":..}`
 * lines, timed exactly as our ring-3 benchmarks time theirs: `rdtsc` around
 * one operation, a short warm-up, nearest-rank median and p99 of N samples
 * (so under `-icount shift=0` both sides count guest instructions). Then
 * `bench done` and power off.
 *
 * Kernel command-line words the kernel does not know reach us in the
 * environment: `bench_samples=N` (default 1000, as our kernel's),
 * `workload_samples=N` (the busybox group's timed runs per workload; default
 * bench_samples, at most 5) and
 * `benches=FRAGMENTS` (comma-separated; a group runs when its name contains
 * a fragment, `-fragment` excludes; the groups are getpid, sigsegv, pipe,
 * io_uring, munmap, busybox).
 *
 * The busybox group runs issue 17's workloads with the very program our side
 * runs, /bin/workloads (benches/posix/workloads.c, which prints its own
 * `bench` lines), beside Debian's busybox-static at /bin/busybox; xtask puts
 * both into the initramfs only when the group is asked for.
 *
 * Built static with `musl-gcc -static -O2 -Wall -Wextra` by xtask; io_uring
 * is driven with raw system calls (the few structures it needs are declared
 * here: musl ships no Linux UAPI headers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SAMPLES 100000
#define WARMUP 16
#define TLB_WARMUP 4
#define PAGE 4096

static uint64_t samples[MAX_SAMPLES];
static int failed;

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("benchinit: FAILED: ");
    vprintf(fmt, ap);
    printf(" (errno %d)\n", errno);
    va_end(ap);
    fflush(stdout);
    failed = 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank, as libos-async's bench::percentile. */
static uint64_t percentile(const uint64_t *sorted, size_t n, size_t pct)
{
    size_t rank = (pct * n + 99) / 100;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static void report(const char *name, uint64_t *s, size_t n)
{
    if (n == 0)
        return;
    qsort(s, n, sizeof *s, cmp_u64);
    printf("bench {\"name\":\"%s\",\"unit\":\"cycles\",\"median\":%llu,\"p99\":%llu,"
           "\"samples\":%zu}\n",
           name, (unsigned long long)percentile(s, n, 50),
           (unsigned long long)percentile(s, n, 99), n);
    fflush(stdout);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        fail("sched_setaffinity(%d)", cpu);
}

/* ---- issue 17's workloads (benches/posix/workloads.c) ---- */

/* Runs argv to its end; whether it exited 0. */
static int spawn_wait(char *const argv[])
{
    static char *const env[] = {"PATH=/bin", NULL};
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        execve(argv[0], argv, env);
        _exit(127);
    }
    int status;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void bench_busybox(size_t n)
{
    /* The scripts read /dev/zero and write /dev/null; their applets are
     * found through links in /bin, made here (untimed) as Debian's
     * busybox makes them. */
    if (mknod("/dev/null", S_IFCHR | 0666, makedev(1, 3)) != 0 && errno != EEXIST)
        fail("mknod /dev/null");
    if (mknod("/dev/zero", S_IFCHR | 0666, makedev(1, 5)) != 0 && errno != EEXIST)
        fail("mknod /dev/zero");
    char *const install[] = {"/bin/busybox", "--install", "-s", "/bin", NULL};
    if (!spawn_wait(install)) {
        fail("busybox --install (is /bin/busybox in the initramfs?)");
        return;
    }
    /* Every core, as the scripts' processes would have on a normal boot
     * (run_benchmarks pinned us to core 0). */
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; c++)
        CPU_SET(c, &all);
    if (sched_setaffinity(0, sizeof all, &all) != 0)
        fail("sched_setaffinity(all)");
    const char *w = getenv("workload_samples");
    size_t runs = w && atol(w) > 0 ? (size_t)atol(w) : n;
    char samples[16];
    snprintf(samples, sizeof samples, "%zu", runs < 5 ? runs : (size_t)5);
    char *const run[] = {"/bin/workloads", "linux", samples, NULL};
    if (!spawn_wait(run))
        fail("/bin/workloads");
    pin(0);
}

/* ---- the `benches=` filter (the kernel's `test_selected` rules) ---- */

static const char *filter;

static int selected(const char *group)
{
    if (!filter || !*filter)
        return 1;
    int any_include = 0, included = 0;
    const char *p = filter;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int exclude = len > 0 && *p == '-';
        const char *frag = p + exclude;
        size_t flen = len - exclude;
        if (flen > 0) {
            int hit = memmem(group, strlen(group), frag, flen) != NULL;
            if (exclude && hit)
                return 0;
            if (!exclude) {
                any_include = 1;
                included |= hit;
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return !any_include || included;
}

/* ---- getpid: counterpart of syscall_null ---- */

static void bench_getpid(size_t n)
{
    for (size_t i = 0; i < n + WARMUP; i++) {
        uint64_t t0 = rdtsc();
        syscall(SYS_getpid);
        uint64_t t1 = rdtsc();
        if (i >= WARMUP)
            samples[i - WARMUP] = t1 - t0;
    }
    report("linux_getpid", samples, n);
}

/* ---- SIGSEGV + mprotect: counterpart of fault_upcall_resume ---- */

static volatile int *fault_page;
static volatile uint64_t faults;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    uintptr_t page = (uintptr_t)info->si_addr & ~(uintptr_t)(PAGE - 1);
    if (page != (uintptr_t)fault_page)
        _exit(3);
    faults++;
    mprotect((void *)page, PAGE, PROT_READ | PROT_WRITE);
}

static void bench_sigsegv(size_t n)
{
    void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fail("mmap");
        return;
    }
    fault_page = p;
    *fault_page = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    for (size_t i = 0; i < n + WARMUP; i++) {
        mprotect(p, PAGE, PROT_READ);
        uint64_t t0 = rdtsc();
        *fault_page = (int)i;
        uint64_t t1 = rdtsc();
        if (i >= WARMUP)
            samples[i - WARMUP] = t1 - t0;
    }
    if (faults != n + WARMUP) {
        fail("sigsegv: %llu faults for %zu writes", (unsigned long long)faults, n + WARMUP);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
    munmap(p, PAGE);
    report("linux_sigsegv_mprotect", samples, n);
}

/* ---- pipe ping-pong: counterparts of pct_call_reply and channels ---- */

static int full_io(int write_side, int fd, char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = write_side ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* `size` bytes there and back between two processes, the parent on core
 * `a`, the child on core `b`; each sample one round trip. */
static void bench_pipe(const char *name, size_t n, size_t size, int a, int b)
{
    int there[2], back[2];
    char buf[64] = {0};
    if (pipe(there) != 0 || pipe(back) != 0) {
        fail("pipe");
        return;
    }
    pid_t child = fork();
    if (child < 0) {
        fail("fork");
        return;
    }
    if (child == 0) {
        pin(b);
        for (size_t i = 0; i < n + WARMUP; i++)
            if (full_io(0, there[0], buf, size) || full_io(1, back[1], buf, size))
                _exit(1);
        _exit(0);
    }
    pin(a);
    for (size_t i = 0; i < n + WARMUP; i++) {
        buf[0] = (char)i;
        uint64_t t0 = rdtsc();
        if (full_io(1, there[1], buf, size) || full_io(0, back[0], buf, size)) {
            fail("%s: pipe I/O", name);
            break;
        }
        uint64_t t1 = rdtsc();
        if (i >= WARMUP)
            samples[i - WARMUP] = t1 - t0;
    }
    int status = 0;
    waitpid(child, &status, 0);
    close(there[0]);
    close(there[1]);
    close(back[0]);
    close(back[1]);
    pin(0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail("%s: child ended with status %#x", name, status);
        return;
    }
    report(name, samples, n);
}

/* ---- io_uring NOP batches: counterpart of ring_nop_batch_B ---- */

struct sq_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t resv2;
};
struct cq_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t resv2;
};
struct uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct sq_offsets sq_off;
    struct cq_offsets cq_off;
};
struct uring_sqe {
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off, addr;
    uint32_t len, rw_flags;
    uint64_t user_data;
    uint16_t buf_index, personality;
    int32_t splice_fd_in;
    uint64_t addr3, pad2;
};
struct uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};
_Static_assert(sizeof(struct uring_sqe) == 64, "io_uring_sqe is 64 bytes");
_Static_assert(sizeof(struct uring_params) == 120, "io_uring_params is 120 bytes");

#define RING_ENTRIES 256
#define IORING_OFF_SQ_RING 0ULL
#define IORING_OFF_CQ_RING 0x8000000ULL
#define IORING_OFF_SQES 0x10000000ULL
#define IORING_ENTER_GETEVENTS 1U
#define IORING_OP_NOP 0

static void bench_io_uring(size_t n)
{
    struct uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(SYS_io_uring_setup, RING_ENTRIES, &p);
    if (fd < 0) {
        fail("io_uring_setup");
        return;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct uring_cqe);
    char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    IORING_OFF_SQ_RING);
    char *cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    IORING_OFF_CQ_RING);
    struct uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct uring_sqe),
                                  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                                  IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
        fail("io_uring mmap");
        close(fd);
        return;
    }
    uint32_t *sq_tail = (uint32_t *)(sq + p.sq_off.tail);
    uint32_t sq_mask = *(uint32_t *)(sq + p.sq_off.ring_mask);
    uint32_t *sq_array = (uint32_t *)(sq + p.sq_off.array);
    uint32_t *cq_head = (uint32_t *)(cq + p.cq_off.head);
    uint32_t *cq_tail = (uint32_t *)(cq + p.cq_off.tail);
    uint32_t cq_mask = *(uint32_t *)(cq + p.cq_off.ring_mask);
    struct uring_cqe *cqes = (struct uring_cqe *)(cq + p.cq_off.cqes);

    static const unsigned batches[] = {1, 8, 64, 256};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        unsigned batch = batches[b];
        for (size_t i = 0; i < n + WARMUP; i++) {
            uint64_t t0 = rdtsc();
            /* Submit: fill `batch` NOP entries, publish the tail. */
            uint32_t tail = *sq_tail;
            for (unsigned j = 0; j < batch; j++) {
                uint32_t slot = (tail + j) & sq_mask;
                struct uring_sqe *e = &sqes[slot];
                memset(e, 0, sizeof *e);
                e->opcode = IORING_OP_NOP;
                e->user_data = j;
                sq_array[slot] = slot;
            }
            __atomic_store_n(sq_tail, tail + batch, __ATOMIC_RELEASE);
            long r = syscall(SYS_io_uring_enter, fd, batch, batch, IORING_ENTER_GETEVENTS, NULL, 0);
            /* Reap: consume every completion. */
            uint32_t head = *cq_head;
            uint32_t end = __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
            unsigned got = 0;
            for (; head != end; head++, got++)
                if (cqes[head & cq_mask].res != 0)
                    r = -1;
            __atomic_store_n(cq_head, head, __ATOMIC_RELEASE);
            uint64_t t1 = rdtsc();
            if (r != (long)batch || got != batch) {
                fail("io_uring batch %u: enter %ld, %u completions", batch, r, got);
                goto out;
            }
            if (i >= WARMUP)
                samples[i - WARMUP] = (t1 - t0) / batch;
        }
        char name[64];
        snprintf(name, sizeof name, "linux_io_uring_nop_batch_%u", batch);
        report(name, samples, n);
    }
out:
    munmap(sqes, p.sq_entries * sizeof(struct uring_sqe));
    munmap(cq, cq_len);
    munmap(sq, sq_len);
    close(fd);
}

/* ---- munmap with the address space live on k other cores: counterpart of
 * tlb_shootdown_*_k{k} ---- */

#define FULL_PAGES 512
static volatile int stop_spinning;
static volatile uint64_t spinner_sink;
static volatile int spinners_ready;
static char *spin_page;

static void *spinner(void *arg)
{
    pin((int)(intptr_t)arg);
    __atomic_add_fetch(&spinners_ready, 1, __ATOMIC_SEQ_CST);
    while (!stop_spinning) {
        spinner_sink += *(volatile char *)spin_page;
        cpu_relax();
    }
    return NULL;
}

/* `count` samples of munmap of `pages` pages of memfd `mfd` (mapped,
 * populated, untimed before each): the pages stay in the memfd, so, like
 * ours, the figure is the unmap and its shootdown, not freeing memory. */
static void munmap_samples(int mfd, size_t pages, size_t count)
{
    for (size_t i = 0; i < count + TLB_WARMUP; i++) {
        char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       mfd, 0);
        if (p == MAP_FAILED) {
            fail("mmap %zu pages", pages);
            return;
        }
        for (size_t j = 0; j < pages; j++)
            ((volatile char *)p)[j * PAGE] = 1;
        uint64_t t0 = rdtsc();
        munmap(p, pages * PAGE);
        uint64_t t1 = rdtsc();
        if (i >= TLB_WARMUP)
            samples[i - TLB_WARMUP] = t1 - t0;
    }
}

static void bench_munmap(size_t n, int cores)
{
    size_t n_tlb = n / 5 < 20 ? 20 : n / 5;
    size_t n_full = n_tlb / 4 < 20 ? 20 : n_tlb / 4;
    int mfd = (int)syscall(SYS_memfd_create, "benchinit", 0);
    if (mfd < 0 || ftruncate(mfd, FULL_PAGES * PAGE) != 0) {
        fail("memfd");
        return;
    }
    spin_page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                     -1, 0);
    pin(0);
    for (int k = 1; k < cores && k <= 7; k++) {
        pthread_t threads[7];
        stop_spinning = 0;
        spinners_ready = 0;
        for (int t = 0; t < k; t++)
            if (pthread_create(&threads[t], NULL, spinner, (void *)(intptr_t)(t + 1)) != 0) {
                fail("pthread_create");
                return;
            }
        while (__atomic_load_n(&spinners_ready, __ATOMIC_SEQ_CST) < k)
            cpu_relax();
        char name[64];
        munmap_samples(mfd, 1, n_tlb);
        snprintf(name, sizeof name, "linux_munmap_1page_k%d", k);
        report(name, samples, n_tlb);
        munmap_samples(mfd, 64, n_tlb);
        snprintf(name, sizeof name, "linux_munmap_64pages_k%d", k);
        report(name, samples, n_tlb);
        munmap_samples(mfd, FULL_PAGES, n_full);
        snprintf(name, sizeof name, "linux_munmap_512pages_k%d", k);
        report(name, samples, n_full);
        stop_spinning = 1;
        for (int t = 0; t < k; t++)
            pthread_join(threads[t], NULL);
    }
    close(mfd);
}

/* Runs every selected benchmark (in a child of init: the kernel logs
 * every fault that PID 1 takes as if unhandled, which would time printk). */
static int run_benchmarks(void)
{
    size_t n = 1000;
    const char *s = getenv("bench_samples");
    if (s && atol(s) > 0)
        n = (size_t)atol(s);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    filter = getenv("benches");
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("benchinit: %d cores, %zu samples, benches=%s\n", cores, n, filter ? filter : "(all)");
    fflush(stdout);
    pin(0);

    if (selected("getpid"))
        bench_getpid(n);
    if (selected("sigsegv"))
        bench_sigsegv(n);
    if (selected("pipe")) {
        /* pct_call_reply moves 8 words each way; channels one word. */
        bench_pipe("linux_pipe_pingpong_same_core", n, 64, 1, 1);
        bench_pipe("linux_pipe_pingpong_same_core_8b", n, 8, 1, 1);
        if (cores > 2)
            bench_pipe("linux_pipe_pingpong_cross_core", n, 8, 1, 2);
    }
    if (selected("io_uring"))
        bench_io_uring(n);
    if (selected("munmap"))
        bench_munmap(n, cores);
    if (selected("busybox"))
        bench_busybox(n);
    return failed;
}

int main(void)
{
    pid_t child = fork();
    if (child == 0)
        _exit(run_benchmarks());
    int status = -1;
    if (child < 0)
        fail("fork");
    else
        waitpid(child, &status, 0);
    int ok = child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok)
        printf("bench done\n");
    else
        printf("benchinit: benchmarks failed (status %#x)\n", status);
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
