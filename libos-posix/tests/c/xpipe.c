/* Pipes between processes: fork + pipe (parent writes 1 MiB, the child on
 * another core reads it and checks a checksum), the reverse through dup2 +
 * execve (the exec'd child writes 1 MiB to its stdout), end of file when the
 * last writer process exits without closing, and EPIPE once the last reader
 * process is gone (SIGPIPE ignored). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (1u << 20)
#define CHUNK 65536

static unsigned char pattern(uint32_t i) { return (unsigned char)(i * 2654435761u >> 13); }

static uint32_t sum_of(uint32_t n) {
    uint32_t s = 0;
    for (uint32_t i = 0; i < n; i++) s = s * 31 + pattern(i);
    return s;
}

/* Writes TOTAL pattern bytes to fd in CHUNK writes; 0 on success. */
static int write_all(int fd) {
    static unsigned char buf[CHUNK];
    for (uint32_t off = 0; off < TOTAL; off += CHUNK) {
        for (uint32_t i = 0; i < CHUNK; i++) buf[i] = pattern(off + i);
        uint32_t done = 0;
        while (done < CHUNK) {
            ssize_t w = write(fd, buf + done, CHUNK - done);
            if (w <= 0) return 1;
            done += (uint32_t)w;
        }
    }
    return 0;
}

/* Reads fd to end of file; returns the byte count, the checksum in *sum. */
static long read_all(int fd, uint32_t *sum) {
    static unsigned char buf[CHUNK];
    long n = 0;
    uint32_t s = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) return -1;
        if (r == 0) break;
        for (ssize_t i = 0; i < r; i++) s = s * 31 + buf[i];
        n += r;
    }
    *sum = s;
    return n;
}

static int wait_for(pid_t pid) {
    int st = -1;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return st;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "writer") == 0) return write_all(1) ? 3 : 0;
    uint32_t want = sum_of(TOTAL);
    int p[2];

    /* 1. Parent writes, child reads. */
    if (pipe(p) != 0) return 1;
    pid_t c = fork();
    if (c == 0) {
        close(p[1]);
        uint32_t s;
        long n = read_all(p[0], &s);
        printf("child read %ld bytes, checksum ok %d\n", n, s == want);
        fflush(stdout);
        _exit(n == TOTAL && s == want ? 0 : 1);
    }
    close(p[0]);
    int wr = write_all(p[1]);
    close(p[1]);
    int st = wait_for(c);
    printf("parent wrote ok %d, child exited %d status %d\n", wr == 0, WIFEXITED(st), WEXITSTATUS(st));
    fflush(stdout);

    /* 2. The reverse, through dup2 + execve: the child's stdout is the pipe. */
    if (pipe(p) != 0) return 1;
    c = fork();
    if (c == 0) {
        if (dup2(p[1], 1) != 1) _exit(2);
        close(p[0]);
        close(p[1]);
        char *args[] = {argv[0], "writer", NULL};
        char *env[] = {NULL};
        execve("/proc/self/exe", args, env);
        _exit(127);
    }
    close(p[1]);
    uint32_t s;
    long n = read_all(p[0], &s);
    close(p[0]);
    st = wait_for(c);
    printf("parent read %ld bytes from exec'd writer, checksum ok %d, status %d\n", n, s == want,
           WEXITSTATUS(st));
    fflush(stdout);

    /* 3. End of file when the last writer process exits without closing. */
    if (pipe(p) != 0) return 1;
    c = fork();
    if (c == 0) {
        close(p[0]);
        if (write(p[1], "bye", 3) != 3) _exit(1);
        _exit(0); /* p[1] still open */
    }
    close(p[1]);
    char buf[16];
    ssize_t r1 = read(p[0], buf, sizeof buf);
    ssize_t r2 = read(p[0], buf, sizeof buf);
    printf("read %zd then %zd (end of file after the writer exited)\n", r1, r2);
    close(p[0]);
    wait_for(c);
    fflush(stdout);

    /* 4. EPIPE once the reader process is gone. */
    signal(SIGPIPE, SIG_IGN);
    if (pipe(p) != 0) return 1;
    c = fork();
    if (c == 0) {
        close(p[1]);
        _exit(0); /* p[0] closed by exit */
    }
    close(p[0]);
    wait_for(c);
    errno = 0;
    ssize_t w = write(p[1], "x", 1);
    printf("write after the reader exited: %zd EPIPE %d\n", w, errno == EPIPE);
    close(p[1]);
    return 0;
}
