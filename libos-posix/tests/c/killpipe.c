/* Pipe ends of a process that dies without closing them are released: killed
 * by a signal (SIGTERM, SIGKILL) while it waits, killed while blocked in a
 * write to a full pipe, or ended by a fault. Its reader then sees end of
 * file, its writer EPIPE (SIGPIPE ignored). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void hold_forever(void) {
    for (;;) pause();
}

int main(void) {
    int p[2], st;
    char b;
    ssize_t r;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);

    if (pipe(p)) return 1;
    pid_t c = fork();
    if (c == 0) { close(p[0]); hold_forever(); }
    close(p[1]);
    kill(c, SIGTERM);
    r = read(p[0], &b, 1);
    waitpid(c, &st, 0);
    printf("writer killed by SIGTERM: read %zd, signaled %d by %d\n", r, WIFSIGNALED(st), WTERMSIG(st));
    close(p[0]);

    if (pipe(p)) return 1;
    c = fork();
    if (c == 0) { close(p[1]); hold_forever(); }
    close(p[0]);
    kill(c, SIGKILL);
    waitpid(c, &st, 0);
    r = write(p[1], "x", 1);
    printf("reader killed by SIGKILL: write %zd EPIPE %d, signaled by %d\n", r, r < 0 && errno == EPIPE, WTERMSIG(st));
    close(p[1]);

    if (pipe(p)) return 1;
    c = fork();
    if (c == 0) {
        static char big[1 << 16];
        close(p[0]);
        for (;;)
            if (write(p[1], big, sizeof big) < 0) _exit(3);
    }
    close(p[1]);
    usleep(200000); /* the writer fills the pipe and blocks */
    kill(c, SIGKILL);
    size_t total = 0;
    char buf[4096];
    while ((r = read(p[0], buf, sizeof buf)) > 0) total += (size_t)r;
    waitpid(c, &st, 0);
    printf("blocked writer killed: end of file %d, at least 64 KiB %d, signaled by %d\n", r == 0, total >= 65536, WTERMSIG(st));
    close(p[0]);

    if (pipe(p)) return 1;
    c = fork();
    if (c == 0) {
        close(p[0]);
        *(volatile int *)8 = 1;
        _exit(0);
    }
    close(p[1]);
    r = read(p[0], &b, 1);
    waitpid(c, &st, 0);
    printf("writer faulted: read %zd, signaled by %d\n", r, WTERMSIG(st));
    return 0;
}
