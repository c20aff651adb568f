/* Memory: 20,000 mallocs, an 8 MiB malloc + realloc, mmap/munmap/mprotect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    enum { N = 20000 };
    static char *p[N];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        size_t sz = 1 + (i * 37) % 700;
        p[i] = malloc(sz);
        if (!p[i]) { ok = 0; break; }
        memset(p[i], i & 0xff, sz);
    }
    for (int i = 0; ok && i < N; i++) {
        size_t sz = 1 + (i * 37) % 700;
        if ((unsigned char)p[i][0] != (i & 0xff) || (unsigned char)p[i][sz - 1] != (i & 0xff)) ok = 0;
    }
    for (int i = 0; i < N; i += 2) free(p[i]);
    for (int i = 1; i < N; i += 2) free(p[i]);
    printf("20000 mallocs filled, checked, freed: %d\n", ok);

    size_t big = 8u << 20;
    unsigned char *b = malloc(big);
    printf("8 MiB malloc: %d\n", b != NULL);
    for (size_t i = 0; i < big; i += 4096) b[i] = (unsigned char)(i >> 12);
    b[big - 1] = 0x5a;
    unsigned char *c = realloc(b, 2 * big);
    int same = c != NULL && c[big - 1] == 0x5a;
    for (size_t i = 0; same && i < big; i += 4096) same = c[i] == (unsigned char)(i >> 12);
    memset(c + big, 1, big);
    printf("realloc to 16 MiB keeps contents: %d\n", same);
    free(c);

    long pg = sysconf(_SC_PAGESIZE);
    printf("page size: %ld\n", pg);
    char *m = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap: %d\n", m != MAP_FAILED);
    int zero = 1;
    for (long i = 0; i < 3 * pg; i++) zero &= m[i] == 0;
    printf("fresh pages are zero: %d\n", zero);
    strcpy(m + pg, "second page");
    printf("mprotect read-only: %d\n", mprotect(m + pg, pg, PROT_READ) == 0);
    printf("still readable: %s\n", m + pg);
    printf("munmap middle: %d\n", munmap(m + pg, pg) == 0);
    printf("mprotect over the hole fails: %d\n", mprotect(m, 3 * pg, PROT_READ) != 0);
    char *f = mmap(m + pg, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("MAP_FIXED into the hole: %d\n", f == m + pg);
    f[0] = 'z';
    printf("munmap all: %d\n", munmap(m, 3 * pg) == 0);
    printf("mmap len 0 fails: %d\n", mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED);
    /* musl's sbrk refuses to move the break, so ask brk directly. */
    long cur = syscall(SYS_brk, 0);
    printf("brk grows: %d\n", syscall(SYS_brk, cur + 8192) == cur + 8192);
    printf("brk shrinks: %d\n", syscall(SYS_brk, cur + 4096) == cur + 4096);
    printf("brk below the start is refused: %d\n", syscall(SYS_brk, 4096) == cur + 4096);
    return 0;
}
