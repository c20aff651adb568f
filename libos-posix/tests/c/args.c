/* The start contract: argc/argv/envp and the auxiliary vector.
 * Run as: env -i HOME=/ TERM=dumb ./args one "two words" three */
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
extern char **environ;
int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    const char *base = strrchr(argv[0], '/');
    printf("argv[0] basename=%s\n", base ? base + 1 : argv[0]);
    for (int i = 1; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    printf("argv[argc]==NULL: %d\n", argv[argc] == NULL);
    for (char **e = environ; *e; e++) printf("env %s\n", *e);
    printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));
    printf("AT_PHENT=%lu\n", getauxval(AT_PHENT));
    printf("AT_PHNUM>0: %d\n", getauxval(AT_PHNUM) > 0);
    const Elf64_Phdr *ph = (const Elf64_Phdr *)getauxval(AT_PHDR);
    int has_load = 0;
    for (unsigned long i = 0; ph && i < getauxval(AT_PHNUM); i++) has_load |= ph[i].p_type == PT_LOAD;
    printf("AT_PHDR points at program headers with PT_LOAD: %d\n", has_load);
    extern void _start(void);
    printf("AT_ENTRY==_start: %d\n", getauxval(AT_ENTRY) == (unsigned long)_start);
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    printf("AT_RANDOM present: %d\n", r != NULL);
    printf("AT_EXECFN present: %d\n", getauxval(AT_EXECFN) != 0);
    printf("uid==euid: %d secure=%lu\n", getauxval(AT_UID) == getauxval(AT_EUID), getauxval(AT_SECURE));
    /* The stack is 16-byte aligned at calls (the ABI), so this local is. */
    _Alignas(16) char probe[16];
    printf("aligned local: %d\n", ((uintptr_t)probe & 15) == 0);
    return 0;
}
