/* Signal handlers and rt_sigreturn: the frame (siginfo, ucontext), the
 * registers and vector registers restored after a handler that clobbers
 * them (delivered at a system call's return), masks, sigpending,
 * sigsuspend, SA_NODEFER, SA_RESETHAND, sigaltstack, ignored and
 * default-ignored signals, and a default action ending the process
 * (SIGTERM: the shell sees 143). Sends signals only to itself. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ucontext.h>
#include <sys/syscall.h>

static volatile int count[65];
static volatile int last_code, last_signo, depth, max_depth;
static volatile unsigned handler_mxcsr;
static volatile int on_alt;
static char altstack[65536];

static void plain(int sig) {
    count[sig]++;
    depth++;
    if (depth > max_depth) max_depth = depth;
    /* Clobber every caller-saved vector register and MXCSR. */
    unsigned csr;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    handler_mxcsr = csr;
    unsigned bad = 0x7f80;
    __asm__ volatile("ldmxcsr %0" ::"m"(bad));
    __asm__ volatile(
        "pcmpeqd %%xmm0, %%xmm0\n pcmpeqd %%xmm1, %%xmm1\n pcmpeqd %%xmm8, %%xmm8\n"
        "pcmpeqd %%xmm9, %%xmm9\n pcmpeqd %%xmm15, %%xmm15\n" ::
            : "xmm0", "xmm1", "xmm8", "xmm9", "xmm15");
    if (sig == SIGUSR2 && count[sig] == 1) raise(SIGUSR2); /* nested with SA_NODEFER */
    depth--;
}

static void info(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    count[sig]++;
    last_signo = si->si_signo;
    last_code = si->si_code;
    /* The mask the interrupted code had is in the ucontext. */
    printf("info: signo %d code %d uc_sigmask has USR1 %d\n", si->si_signo, si->si_code,
           sigismember(&uc->uc_sigmask, SIGUSR1));
    char here;
    on_alt = &here >= altstack && &here < altstack + sizeof altstack;
}

static void set(int sig, void (*h)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, 0)) perror("sigaction");
}

/* kill(getpid(), sig) with xmm8..15 and r12..r15 holding patterns; 1 if
 * they survived the handler. */
static int kill_keeps_registers(int sig) {
    unsigned long in[8] = {0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666, 0x7777, 0x8888};
    unsigned long out[8] = {0};
    unsigned long r[4] = {0};
    long pid = getpid();
    __asm__ volatile(
        "movq 0(%[in]), %%xmm8\n movq 8(%[in]), %%xmm9\n movq 16(%[in]), %%xmm10\n"
        "movq 24(%[in]), %%xmm11\n movq 32(%[in]), %%xmm12\n movq 40(%[in]), %%xmm13\n"
        "movq 48(%[in]), %%xmm14\n movq 56(%[in]), %%xmm15\n"
        "movq $0xa12, %%r12\n movq $0xa13, %%r13\n movq $0xa14, %%r14\n movq $0xa15, %%r15\n"
        "movq $62, %%rax\n movq %[pid], %%rdi\n movq %[sig], %%rsi\n syscall\n"
        "movq %%xmm8, 0(%[out])\n movq %%xmm9, 8(%[out])\n movq %%xmm10, 16(%[out])\n"
        "movq %%xmm11, 24(%[out])\n movq %%xmm12, 32(%[out])\n movq %%xmm13, 40(%[out])\n"
        "movq %%xmm14, 48(%[out])\n movq %%xmm15, 56(%[out])\n"
        "movq %%r12, 0(%[r])\n movq %%r13, 8(%[r])\n movq %%r14, 16(%[r])\n movq %%r15, 24(%[r])\n"
        :
        : [in] "r"(in), [out] "r"(out), [r] "r"(r), [pid] "r"(pid), [sig] "r"((long)sig)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r11", "r12", "r13", "r14", "r15", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
    return memcmp(in, out, sizeof in) == 0 && r[0] == 0xa12 && r[1] == 0xa13 && r[2] == 0xa14 &&
           r[3] == 0xa15;
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    unsigned csr = 0x1f80 | 0x6000, now;
    __asm__ volatile("ldmxcsr %0" ::"m"(csr));

    set(SIGUSR1, plain, 0);
    printf("registers kept: %d\n", kill_keeps_registers(SIGUSR1));
    __asm__ volatile("stmxcsr %0" : "=m"(now));
    printf("count %d, handler mxcsr %#x, mxcsr back %d\n", count[SIGUSR1], handler_mxcsr,
           now == csr);

    /* Blocked: pending, then delivered when unblocked. */
    sigset_t s, old, pend;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigprocmask(SIG_BLOCK, &s, &old);
    raise(SIGUSR1);
    raise(SIGUSR1);
    sigpending(&pend);
    printf("blocked: count %d pending %d\n", count[SIGUSR1], sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_SETMASK, &old, 0);
    printf("unblocked: count %d\n", count[SIGUSR1]);

    /* SA_SIGINFO from kill and from tgkill; the handler sees USR1 blocked
     * in its ucontext only if the interrupted code had it blocked. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = info;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR2, &sa, 0);
    kill(getpid(), SIGUSR2);
    syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);
    sigprocmask(SIG_BLOCK, &s, 0);
    kill(getpid(), SIGUSR2);
    sigprocmask(SIG_SETMASK, &old, 0);
    printf("count after USR1 was blocked: %d\n", count[SIGUSR1]);

    /* SA_NODEFER: a nested delivery of the same signal. */
    set(SIGUSR2, plain, SA_NODEFER);
    count[SIGUSR2] = 0;
    max_depth = 0;
    raise(SIGUSR2);
    printf("nodefer: count %d depth %d\n", count[SIGUSR2], max_depth);
    /* Without it, the nested one waits for the first to return. */
    set(SIGUSR2, plain, 0);
    count[SIGUSR2] = 0;
    max_depth = 0;
    raise(SIGUSR2);
    printf("defer: count %d depth %d\n", count[SIGUSR2], max_depth);

    /* SA_RESETHAND: one shot, then the default (which for SIGWINCH is
     * to ignore it). */
    set(SIGWINCH, plain, SA_RESETHAND);
    raise(SIGWINCH);
    raise(SIGWINCH);
    printf("resethand: count %d\n", count[SIGWINCH]);
    /* Ignored, and ignored by default. */
    set(SIGUSR1, SIG_IGN, 0);
    raise(SIGUSR1);
    raise(SIGCHLD);
    raise(SIGURG);
    printf("ignored: still here\n");

    /* sigaltstack + SA_ONSTACK. */
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    printf("sigaltstack %d\n", sigaltstack(&ss, 0));
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGUSR2, &sa, 0);
    raise(SIGUSR2);
    printf("on the alternate stack: %d\n", on_alt);

    /* sigsuspend: wait with USR2 unblocked; the old mask is back after. */
    set(SIGUSR2, plain, 0);
    sigset_t b2, waitmask, after;
    sigemptyset(&b2);
    sigaddset(&b2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &b2, 0);
    raise(SIGUSR2);
    sigemptyset(&waitmask);
    count[SIGUSR2] = 0;
    int r = sigsuspend(&waitmask);
    sigprocmask(SIG_BLOCK, 0, &after);
    printf("sigsuspend %d (EINTR %d) count %d, USR2 blocked again %d\n", r, r == -1,
           count[SIGUSR2], sigismember(&after, SIGUSR2));

    /* SIGKILL and SIGSTOP cannot be caught. */
    printf("sigaction(SIGKILL) %d\n", sigaction(SIGKILL, &sa, 0));

    /* The default action of SIGTERM ends us: 128 + 15. */
    kill(getpid(), SIGTERM);
    printf("not reached\n");
    return 0;
}
