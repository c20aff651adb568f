/* kill(-pgid) reaches every member of the group, not only the caller's own
 * children: the parent puts its child in a group of its own, the child
 * forks a grandchild (in that group too) and ignores SIGTERM itself; the
 * parent's kill(-child, SIGTERM) must end the grandchild, which the child
 * reports in its exit status. Also: kill(-pgid, 0) probes the group, and
 * an empty group is ESRCH. Sends signals only within its own group. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t a = fork();
    if (a < 0) return 2;
    if (a == 0) {
        setpgid(0, 0);
        pid_t g = fork();
        if (g == 0) {
            write(fds[1], "g", 1);
            sleep(20); /* a bound: a group kill that missed it fails, not hangs */
            _exit(3);
        }
        signal(SIGTERM, SIG_IGN);
        write(fds[1], "a", 1);
        int st;
        if (waitpid(g, &st, 0) != g) _exit(1);
        _exit(WIFSIGNALED(st) ? 100 + WTERMSIG(st) : 2);
    }
    setpgid(a, a);
    char c;
    read(fds[0], &c, 1);
    read(fds[0], &c, 1);
    printf("group probe: %d\n", kill(-a, 0));
    printf("group kill: %d\n", kill(-a, SIGTERM));
    int st;
    printf("child reaped: %d\n", waitpid(a, &st, 0) == a);
    printf("grandchild ended by SIGTERM: %d\n", WIFEXITED(st) && WEXITSTATUS(st) == 100 + SIGTERM);
    errno = 0;
    int r = kill(-a, 0);
    printf("empty group: %d errno ESRCH %d\n", r, errno == ESRCH);
    return 0;
}
