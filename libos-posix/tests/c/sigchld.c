/* SIGCHLD comes when a child ends, wherever the parent is: in a busy loop
 * with no system call, in nanosleep (cut short: EINTR), in a pipe read
 * (restarted under SA_RESTART). The child is already waitable in the
 * handler (waitpid WNOHANG reaps it there). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t chld, reaped, status;

static void on_chld(int s) {
    (void)s;
    int st;
    pid_t w = waitpid(-1, &st, WNOHANG);
    chld++;
    if (w > 0) { reaped++; status = WEXITSTATUS(st); }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);

    pid_t c = fork();
    if (c == 0) _exit(3);
    volatile unsigned long spins = 0;
    while (!chld && spins < 2000000000UL) spins++;
    printf("busy loop: SIGCHLD %d, reaped in the handler %d with status %d\n", chld, reaped, status);

    chld = reaped = status = 0;
    c = fork();
    if (c == 0) { usleep(50000); _exit(4); }
    struct timespec ts = {20, 0};
    int r = nanosleep(&ts, &ts);
    printf("nanosleep: %d EINTR %d, SIGCHLD %d, reaped %d with status %d, time left %d\n", r, r < 0 && errno == EINTR, chld, reaped, status, ts.tv_sec > 10);

    chld = reaped = status = 0;
    int p[2];
    if (pipe(p)) return 1;
    c = fork();
    if (c == 0) {
        pid_t g = fork();
        if (g == 0) _exit(5);
        waitpid(g, NULL, 0);
        usleep(500000); /* long after its sibling's end */
        write(p[1], "k", 1);
        _exit(6);
    }
    pid_t d = fork();
    if (d == 0) { usleep(20000); _exit(5); }
    char b = 0;
    ssize_t n = read(p[0], &b, 1);
    printf("pipe read: %zd byte %c, SIGCHLD at least once %d\n", n, n == 1 ? b : '?', chld >= 1);
    while (waitpid(-1, NULL, 0) > 0) {}
    printf("no child left: %d\n", errno == ECHILD);
    return 0;
}
