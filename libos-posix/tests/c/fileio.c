/* File I/O: create, lseek, pread/pwrite, dup2, O_APPEND, rename, mkdir,
 * readdir, and the errors ENOTEMPTY EEXIST EBADF ENOENT EISDIR ENOTDIR. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define D "/tmp/libos-posix-fileio"
static const char *en(int e) {
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EBADF: return "EBADF";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case EINVAL: return "EINVAL";
    case ESPIPE: return "ESPIPE";
    default: return "other";
    }
}
#define TRY(expr) do { errno = 0; long r_ = (long)(expr); printf("%-44s -> %ld %s\n", #expr, r_, r_ < 0 ? en(errno) : ""); } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    /* Start clean (leftovers of an interrupted run). */
    unlink(D "/sub/x"); rmdir(D "/sub"); unlink(D "/a"); unlink(D "/b"); unlink(D "/c"); rmdir(D "/e"); rmdir(D);
    TRY(mkdir(D, 0755));
    TRY(mkdir(D, 0755));
    TRY(chdir(D));
    int fd = open("a", O_CREAT | O_RDWR | O_TRUNC, 0644);
    printf("open a: %d\n", fd);
    TRY(write(fd, "0123456789", 10));
    TRY(lseek(fd, 3, SEEK_SET));
    char buf[64] = {0};
    TRY(read(fd, buf, 4));
    printf("read: %s\n", buf);
    TRY(lseek(fd, -2, SEEK_END));
    TRY(lseek(fd, -100, SEEK_CUR));
    TRY(pwrite(fd, "AB", 2, 1));
    memset(buf, 0, sizeof buf);
    TRY(pread(fd, buf, 20, 0));
    printf("pread: %s\n", buf);
    TRY(lseek(fd, 0, SEEK_CUR));
    struct stat st;
    TRY(fstat(fd, &st));
    printf("size=%ld regular=%d mode=%o\n", (long)st.st_size, S_ISREG(st.st_mode), st.st_mode & 0777);
    /* dup2 onto a new number: shared offset. */
    TRY(dup2(fd, 10));
    TRY(lseek(10, 0, SEEK_SET));
    TRY(lseek(fd, 0, SEEK_CUR));
    TRY(close(10));
    TRY(close(10));
    TRY(write(10, "x", 1));
    /* O_APPEND. */
    int ap = open("a", O_WRONLY | O_APPEND);
    TRY(lseek(ap, 0, SEEK_SET));
    TRY(write(ap, "END", 3));
    TRY(lseek(ap, 0, SEEK_CUR));
    close(ap);
    memset(buf, 0, sizeof buf);
    TRY(pread(fd, buf, 63, 0));
    printf("after append: %s\n", buf);
    /* stdout redirected to a file with dup2, then restored. */
    fflush(stdout);
    int saved = dup(1);
    int out = open("b", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    dup2(out, 1);
    printf("into b\n");
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(out);
    int bfd = open("b", O_RDONLY);
    memset(buf, 0, sizeof buf);
    TRY(read(bfd, buf, 63));
    printf("b holds: %s", buf);
    close(bfd);
    /* rename, mkdir, readdir, rmdir. */
    TRY(rename("b", "c"));
    TRY(open("b", O_RDONLY));
    TRY(mkdir("sub", 0755));
    TRY(mkdir("e", 0755));
    TRY(open("sub/x", O_CREAT | O_EXCL | O_WRONLY, 0644));
    TRY(open("sub/x", O_CREAT | O_EXCL | O_WRONLY, 0644));
    TRY(rmdir("sub"));
    TRY(rename("e", "sub"));
    TRY(rename("c", "sub"));
    TRY(unlink("sub"));
    TRY(open("sub", O_WRONLY));
    TRY(open("a/x", O_RDONLY));
    TRY(open("nope", O_RDONLY));
    DIR *d = opendir(".");
    char *names[32];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 32) names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("readdir:");
    for (int i = 0; i < n; i++) printf(" %s", names[i]);
    printf("\n");
    char cwd[256];
    printf("getcwd: %s\n", getcwd(cwd, sizeof cwd));
    /* Clean up. */
    TRY(unlink("sub/x"));
    TRY(rmdir("sub"));
    TRY(rmdir("e"));
    TRY(unlink("a"));
    TRY(unlink("c"));
    TRY(chdir("/"));
    TRY(rmdir(D));
    TRY(close(fd));
    TRY(read(fd, buf, 1));
    return 0;
}
