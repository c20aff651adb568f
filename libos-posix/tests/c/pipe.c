/* Pipes within one process: pipe/pipe2, capacity, PIPE_BUF atomicity,
 * O_NONBLOCK, end of file, EPIPE with SIGPIPE ignored, poll, dup2, fcntl,
 * fstat, lseek. Prints checked facts only. (Pipes between processes and a
 * SIGPIPE that kills need fork and signals.) */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(what, cond) printf("%s: %s\n", what, (cond) ? "ok" : "FAIL")

int main(void) {
    int p[2];
    char buf[8192];
    signal(SIGPIPE, SIG_IGN);

    CHECK("pipe", pipe(p) == 0 && p[0] == 3 && p[1] == 4);
    CHECK("write 5", write(p[1], "hello", 5) == 5);
    CHECK("read 3", read(p[0], buf, 3) == 3 && memcmp(buf, "hel", 3) == 0);
    CHECK("read rest", read(p[0], buf, sizeof buf) == 2 && memcmp(buf, "lo", 2) == 0);
    CHECK("read write end: EBADF", read(p[1], buf, 1) == -1 && errno == EBADF);
    CHECK("write read end: EBADF", write(p[0], "x", 1) == -1 && errno == EBADF);

    struct stat st;
    CHECK("fstat fifo", fstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode));
    CHECK("lseek: ESPIPE", lseek(p[0], 0, SEEK_CUR) == -1 && errno == ESPIPE);
    CHECK("pread: ESPIPE", pread(p[0], buf, 1, 0) == -1 && errno == ESPIPE);

    /* Fill it: 16 pages, then EAGAIN. */
    CHECK("F_SETFL nonblock", fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
    CHECK("F_GETFL", fcntl(p[1], F_GETFL) == (O_WRONLY | O_NONBLOCK));
    memset(buf, 'a', sizeof buf);
    long total = 0;
    for (;;) {
        ssize_t n = write(p[1], buf, 4096);
        if (n < 0) {
            CHECK("full: EAGAIN", errno == EAGAIN);
            break;
        }
        total += n;
    }
    printf("capacity %ld\n", total);
    int avail = -1;
    CHECK("FIONREAD", ioctl(p[0], FIONREAD, &avail) == 0 && avail == 65536);
    CHECK("F_GETPIPE_SZ", fcntl(p[0], F_GETPIPE_SZ) == 65536);

    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {p[1], POLLOUT, 0}};
    CHECK("poll full", poll(pf, 2, 0) == 1 && pf[0].revents == POLLIN && pf[1].revents == 0);
    /* One page free. (Linux counts pages, this ring bytes: only what both
     * agree on is checked.) */
    CHECK("read 4096", read(p[0], buf, 4096) == 4096);
    CHECK("write 101", write(p[1], buf, 101) == 101);
    CHECK("atomic 4096: EAGAIN", write(p[1], buf, 4096) == -1 && errno == EAGAIN);
    ssize_t part = write(p[1], buf, 5000);
    CHECK("nonatomic 5000: partial", part > 0 && part < 5000);
    /* Drain it.*/
    total = 0;
    CHECK("F_SETFL read nonblock", fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    for (;;) {
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n < 0) {
            CHECK("empty: EAGAIN", errno == EAGAIN);
            break;
        }
        total += n;
    }
    CHECK("drained", total == 61440 + 101 + part);
    CHECK("poll empty and writable", poll(pf, 2, 0) == 1 && pf[0].revents == 0 &&
                                          pf[1].revents == POLLOUT);
    CHECK("poll empty, timeout", poll(pf, 1, 10) == 0 && pf[0].revents == 0);

    /* dup2 keeps the write end open; end of file with the last writer. */
    CHECK("dup2", dup2(p[1], 10) == 10);
    CHECK("close write end", close(p[1]) == 0);
    CHECK("write through dup", write(10, "dup", 3) == 3);
    CHECK("fcntl(F_SETFL, 0)", fcntl(p[0], F_SETFL, 0) == 0);
    CHECK("read via dup", read(p[0], buf, 10) == 3 && memcmp(buf, "dup", 3) == 0);
    CHECK("close dup", close(10) == 0);
    CHECK("end of file", read(p[0], buf, 10) == 0);
    CHECK("poll hup", poll(pf, 1, -1) == 1 && pf[0].revents == POLLHUP);
    CHECK("close read end", close(p[0]) == 0);

    /* EPIPE once the last reader is gone (SIGPIPE ignored). */
    CHECK("pipe2 cloexec", pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    CHECK("FD_CLOEXEC", fcntl(p[0], F_GETFD) == FD_CLOEXEC && fcntl(p[1], F_GETFD) == FD_CLOEXEC);
    CHECK("pipe2 bad flags: EINVAL", pipe2(p + 0, 1) == -1 && errno == EINVAL);
    CHECK("close reader", close(p[0]) == 0);
    struct pollfd wf = {p[1], POLLOUT, 0};
    CHECK("poll err", poll(&wf, 1, 0) == 1 && wf.revents == (POLLOUT | POLLERR));
    CHECK("write: EPIPE", write(p[1], "x", 1) == -1 && errno == EPIPE);
    int *volatile bad = (int *)8;
    CHECK("pipe bad pointer: EFAULT", pipe(bad) == -1 && errno == EFAULT);
    CHECK("lowest free again", dup(0) == 3);
    return 0;
}
