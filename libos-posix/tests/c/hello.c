/* The smallest program: stdio on the console, exit status 0. */
#include <stdio.h>
int main(void) {
    printf("hello from a static Linux binary\n");
    return 0;
}
