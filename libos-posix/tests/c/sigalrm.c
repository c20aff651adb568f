/* SIGALRM interrupting a busy loop that makes no system call, with every
 * caller-saved register and vector register checked after the handler
 * (asynchronous delivery and rt_sigreturn); an interval timer; alarm's
 * return values; nanosleep cut short (EINTR with the time left, even
 * under SA_RESTART); pause. Signals only itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int fired;

static void on_alarm(int sig) {
    (void)sig;
    fired++;
    __asm__ volatile(
        "pcmpeqd %%xmm0, %%xmm0\n pcmpeqd %%xmm3, %%xmm3\n pcmpeqd %%xmm7, %%xmm7\n"
        "movq $-1, %%r8\n movq $-1, %%r9\n movq $-1, %%r10\n movq $-1, %%r11\n"
        "movq $-1, %%rsi\n movq $-1, %%rdi\n movq $-1, %%rdx\n movq $-1, %%rcx\n" ::
            : "xmm0", "xmm3", "xmm7", "r8", "r9", "r10", "r11", "rsi", "rdi", "rdx", "rcx");
}

static void set(int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = flags;
    sigaction(SIGALRM, &sa, 0);
}

/* Spins on `fired` with patterns in r8-r11, rsi, rdi, rdx, rcx, rax and
 * xmm0-7; 1 if every one survived the interruption. */
static int spin_until_fired(int want) {
    unsigned long out[17];
    __asm__ volatile(
        "movabs $0x1111111111111111, %%r8\n movabs $0x2222222222222222, %%r9\n"
        "movabs $0x3333333333333333, %%r10\n movabs $0x4444444444444444, %%r11\n"
        "movabs $0x5555555555555555, %%rsi\n movabs $0x6666666666666666, %%rdi\n"
        "movabs $0x7777777777777777, %%rdx\n movabs $0x0888888888888888, %%rcx\n"
        "movq %%r8, %%xmm0\n movq %%r9, %%xmm1\n movq %%r10, %%xmm2\n movq %%r11, %%xmm3\n"
        "movq %%rsi, %%xmm4\n movq %%rdi, %%xmm5\n movq %%rdx, %%xmm6\n movq %%rcx, %%xmm7\n"
        "movabs $0x0999999999999999, %%rax\n"
        "1: cmpl %[want], %[fired]\n jl 1b\n"
        "movq %%r8, 0(%[o])\n movq %%r9, 8(%[o])\n movq %%r10, 16(%[o])\n movq %%r11, 24(%[o])\n"
        "movq %%rsi, 32(%[o])\n movq %%rdi, 40(%[o])\n movq %%rdx, 48(%[o])\n movq %%rcx, 56(%[o])\n"
        "movq %%xmm0, 64(%[o])\n movq %%xmm1, 72(%[o])\n movq %%xmm2, 80(%[o])\n"
        "movq %%xmm3, 88(%[o])\n movq %%xmm4, 96(%[o])\n movq %%xmm5, 104(%[o])\n"
        "movq %%xmm6, 112(%[o])\n movq %%xmm7, 120(%[o])\n movq %%rax, 128(%[o])\n"
        :
        : [o] "b"(out), [fired] "m"(fired), [want] "r"(want)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2",
          "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "memory", "cc");
    unsigned long want_v[8] = {0x1111111111111111, 0x2222222222222222, 0x3333333333333333,
                               0x4444444444444444, 0x5555555555555555, 0x6666666666666666,
                               0x7777777777777777, 0x0888888888888888};
    return memcmp(out, want_v, 64) == 0 && memcmp(out + 8, want_v, 64) == 0 &&
           out[16] == 0x0999999999999999;
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    set(0);
    printf("alarm(1) -> %u\n", alarm(1));
    int kept = spin_until_fired(1);
    printf("busy loop interrupted, registers kept: %d, fired %d\n", kept, fired);

    /* alarm's return: the seconds left of the previous one. */
    alarm(5);
    printf("alarm(0) after alarm(5) -> %u\n", alarm(0));

    /* An interval timer: three ticks of 20 ms in one busy loop. */
    struct itimerval it = {{0, 20000}, {0, 20000}}, got;
    fired = 0;
    setitimer(ITIMER_REAL, &it, 0);
    printf("three ticks, registers kept: %d\n", spin_until_fired(3));
    getitimer(ITIMER_REAL, &got);
    printf("interval %ld us, armed %d\n", (long)got.it_interval.tv_usec,
           got.it_value.tv_sec > 0 || got.it_value.tv_usec > 0);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    getitimer(ITIMER_REAL, &got);
    printf("disarmed %d\n", got.it_value.tv_sec == 0 && got.it_value.tv_usec == 0);

    /* nanosleep cut short: EINTR and the time left, SA_RESTART or not. */
    set(SA_RESTART);
    fired = 0;
    struct timespec req = {3, 0}, rem = {0, 0};
    alarm(1);
    int r = nanosleep(&req, &rem);
    printf("nanosleep %d errno EINTR %d fired %d rem %d\n", r, errno == EINTR, fired,
           rem.tv_sec >= 1 && rem.tv_sec <= 2);

    /* pause returns -1/EINTR after the handler. */
    fired = 0;
    alarm(1);
    r = pause();
    printf("pause %d errno EINTR %d fired %d\n", r, errno == EINTR, fired);

    /* The default action: SIGALRM ends the process (128 + 14). */
    signal(SIGALRM, SIG_DFL);
    alarm(1);
    for (;;)
        ;
}
