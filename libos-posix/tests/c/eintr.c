/* A blocking call cut short by a caught signal: EINTR without SA_RESTART,
 * restarted with it — a pipe read, a pipe write into a full pipe (what was
 * written counts), and waitpid. The signal comes from a child. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int s) { (void)s; got++; }

static void handler(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGUSR1, &sa, NULL);
    got = 0;
}

/* A child that signals `parent` after `us` microseconds, then writes `byte`
 * to `fd` after as long again (if fd >= 0). */
static pid_t poke(pid_t parent, int us, int fd, char byte) {
    pid_t c = fork();
    if (c == 0) {
        usleep(us);
        kill(parent, SIGUSR1);
        if (fd >= 0) {
            usleep(us);
            write(fd, &byte, 1);
        }
        _exit(0);
    }
    return c;
}

int main(void) {
    pid_t me = getpid();
    int p[2], st;
    char b = 0;
    ssize_t r;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pipe(p)) return 1;

    handler(0);
    pid_t c = poke(me, 100000, -1, 0);
    r = read(p[0], &b, 1);
    printf("read: %zd EINTR %d handler %d\n", r, r < 0 && errno == EINTR, got);
    waitpid(c, NULL, 0);

    handler(1);
    c = poke(me, 100000, p[1], 'z');
    r = read(p[0], &b, 1);
    printf("read with SA_RESTART: %zd byte %c handler %d\n", r, r == 1 ? b : '?', got);
    waitpid(c, NULL, 0);

    handler(0);
    static char big[65536 + 4096];
    c = poke(me, 100000, -1, 0);
    r = write(p[1], big, sizeof big);
    printf("write into a full pipe: %zd handler %d\n", r, got);
    waitpid(c, NULL, 0);
    c = poke(me, 100000, -1, 0);
    r = write(p[1], big, 1);
    printf("write into the full pipe again: %zd EINTR %d handler %d\n", r, r < 0 && errno == EINTR, got);
    waitpid(c, NULL, 0);

    handler(0);
    pid_t sleeper = fork();
    if (sleeper == 0) { usleep(800000); _exit(7); }
    c = poke(me, 100000, -1, 0);
    r = waitpid(sleeper, &st, 0);
    printf("waitpid: %zd EINTR %d handler %d\n", r, r < 0 && errno == EINTR, got);
    waitpid(c, NULL, 0);

    handler(1);
    c = poke(me, 100000, -1, 0);
    r = waitpid(sleeper, &st, 0);
    printf("waitpid with SA_RESTART: the sleeper %d status %d handler %d\n", r == sleeper, WEXITSTATUS(st), got);
    waitpid(c, NULL, 0);
    return 0;
}
