/* An unimplemented system call: tuxcall (184) is ENOSYS on Linux too, so
 * the output is the same; libos-posix also reports it once by name. */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    errno = 0;
    long r = syscall(184);
    printf("tuxcall: %ld ENOSYS=%d\n", r, errno == ENOSYS);
    errno = 0;
    r = syscall(184);
    printf("again: %ld ENOSYS=%d\n", r, errno == ENOSYS);
    printf("still running\n");
    return 7;
}
