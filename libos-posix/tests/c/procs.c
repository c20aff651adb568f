/* Processes: fork, waitpid and its status encoding, ECHILD, WNOHANG,
 * execve (of itself through /proc/self/exe, with dup2 and close-on-exec),
 * ENOENT/EACCES from execve, and eight children each rewriting 4 MiB of
 * heap and 4 MiB of anonymous mmap while the parent's copy stays intact. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int exec_child(int argc, char **argv) {
    /* argv: procs exec-child FD CLOEXEC_FD */
    int fd = atoi(argv[2]), cfd = atoi(argv[3]);
    char line[128];
    int n = snprintf(line, sizeof line, "exec child: argc %d, fd %d open %d, cloexec fd closed %d\n",
                     argc, fd, fcntl(fd, F_GETFD) >= 0, fcntl(cfd, F_GETFD) < 0 && errno == EBADF);
    if (write(fd, line, n) != n) return 1;
    return 42;
}

static int wait_for(pid_t pid) {
    int st = -1;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return st;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "exec-child") == 0) return exec_child(argc, argv);
    pid_t me = getpid();
    printf("pid positive: %d, ppid differs: %d\n", me > 0, getppid() != me);

    errno = 0;
    int r = waitpid(-1, NULL, 0);
    printf("wait with no child: %d ECHILD %d\n", r, errno == ECHILD);
    fflush(stdout);

    pid_t c = fork();
    if (c == 0) _exit(getppid() == me ? 7 : 8);
    int st = wait_for(c);
    printf("child exit: exited %d status %d\n", WIFEXITED(st), WEXITSTATUS(st));
    errno = 0;
    r = waitpid(c, NULL, 0);
    printf("wait again: %d ECHILD %d\n", r, errno == ECHILD);
    fflush(stdout);

    c = fork();
    if (c == 0) { int *volatile p = (int *)16; *p = 1; _exit(0); }
    st = wait_for(c);
    printf("segfault child: signaled %d signal %d\n", WIFSIGNALED(st), WTERMSIG(st));
    fflush(stdout);

    c = fork();
    if (c == 0) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        exit(3);
    }
    r = waitpid(c, &st, WNOHANG);
    printf("WNOHANG on a running child: %d\n", r);
    st = wait_for(c);
    printf("then: exited %d status %d\n", WIFEXITED(st), WEXITSTATUS(st));

    char *nargv[] = {"x", NULL};
    errno = 0;
    r = execve("/no/such/file", nargv, NULL);
    printf("execve missing: %d ENOENT %d\n", r, errno == ENOENT);
    errno = 0;
    r = execve("/", nargv, NULL);
    printf("execve directory: %d EACCES %d\n", r, errno == EACCES);
    fflush(stdout);

    int cfd = open("/", O_RDONLY | O_CLOEXEC);
    c = fork();
    if (c == 0) {
        if (dup2(1, 5) != 5) _exit(2);
        char fdarg[16];
        snprintf(fdarg, sizeof fdarg, "%d", cfd);
        char *av[] = {"procs", "exec-child", "5", fdarg, NULL};
        char *ev[] = {"A=1", NULL};
        execve("/proc/self/exe", av, ev);
        _exit(127);
    }
    st = wait_for(c);
    printf("exec child status: %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    close(cfd);

    /* Eight children rewrite 4 MiB of heap and 4 MiB of mmap. */
    enum { SZ = 4 << 20, KIDS = 8 };
    unsigned char *heap = malloc(SZ);
    unsigned char *anon = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!heap || anon == MAP_FAILED) { printf("no memory\n"); return 1; }
    for (size_t i = 0; i < SZ; i++) { heap[i] = (unsigned char)(i * 7); anon[i] = (unsigned char)(i * 13); }
    fflush(stdout);
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (size_t i = 0; i < SZ; i++) { heap[i] = (unsigned char)(k + i); anon[i] = (unsigned char)(k ^ i); }
            for (size_t i = 0; i < SZ; i += 1) {
                if (heap[i] != (unsigned char)(k + i) || anon[i] != (unsigned char)(k ^ i)) _exit(100);
            }
            _exit(10 + k);
        }
        if (kids[k] < 0) { printf("fork %d failed: errno %d\n", k, errno); return 1; }
    }
    int all = 1;
    for (int k = KIDS - 1; k >= 0; k--) {
        st = wait_for(kids[k]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 10 + k) { all = 0; fprintf(stderr, "child %d: status %#x\n", k, st); }
    }
    int same = 1;
    for (size_t i = 0; i < SZ; i++)
        if (heap[i] != (unsigned char)(i * 7) || anon[i] != (unsigned char)(i * 13)) { same = 0; break; }
    printf("eight children rewrote 8 MiB each: %d; parent's memory unchanged: %d\n", all, same);
    errno = 0;
    r = wait(NULL);
    printf("no children left: %d ECHILD %d\n", r, errno == ECHILD);
    return 5;
}
