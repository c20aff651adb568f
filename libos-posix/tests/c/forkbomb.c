/* Hostile: a fork bomb. Every process forks until fork fails or it has
 * made 64 children, down to grandchildren (on Linux: at most 4,160
 * processes); every process then reaps its children. On the exokernel the
 * quota stops it (fork fails with EAGAIN, on stderr) long before the
 * bound; either way the tree must end whole, and fork must work again
 * afterwards. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

enum { WIDTH = 64, DEPTH = 2 };

/* Forks up to WIDTH children (each recursing while depth < DEPTH), waits
 * for all; returns 1 if every child ended with status 0. */
static int bomb(int depth, int *refused) {
    pid_t kids[WIDTH];
    int n = 0, ok = 1;
    for (; n < WIDTH; n++) {
        pid_t c = fork();
        if (c < 0) {
            if (errno != EAGAIN && errno != ENOMEM) ok = 0;
            *refused = errno;
            break;
        }
        if (c == 0) {
            int r = 0;
            int good = depth + 1 < DEPTH ? bomb(depth + 1, &r) : 1;
            _exit(good ? 0 : 1);
        }
        kids[n] = c;
    }
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
    }
    return ok;
}

int main(void) {
    int refused = 0;
    fflush(stdout);
    int ok = bomb(0, &refused);
    if (refused) fprintf(stderr, "fork refused with errno %d\n", refused);
    printf("every process of the bomb ended cleanly: %d\n", ok);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) _exit(0);
    int st;
    printf("fork works after the bomb: %d\n", c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st));
    return 0;
}
