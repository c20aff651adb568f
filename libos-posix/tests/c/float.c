/* Floating point and SSE: needs SSE enabled and its state kept in ring 3. */
#include <math.h>
#include <stdio.h>

int main(void) {
    double s = 0;
    for (int n = 1; n <= 1000000; n++) s += 1.0 / ((double)n * n);
    printf("sum 1/n^2 = %.12f (pi^2/6 = %.12f)\n", s, M_PI * M_PI / 6);
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)i * 0.5f + 0.25f;
    float dot = 0;
    for (int i = 0; i < 64; i++) dot += v[i] * v[i];
    printf("float dot = %.3f\n", dot);
    printf("sqrt(2) = %.15f\n", sqrt(2.0));
    printf("exp(1) = %.15f, log(10) = %.15f\n", exp(1.0), log(10.0));
    printf("sin(1) = %.15f, atan2(1,2) = %.15f\n", sin(1.0), atan2(1.0, 2.0));
    printf("%%g: %g %g %g\n", 1e-300 * 1e-300, 1.0 / 3, 123456789.0);
    volatile double z = 0;
    printf("inf: %f, nan is nan: %d\n", 1 / z, isnan(z / z));
    long double ld = 1.0L / 3;
    printf("long double 1/3 = %.18Lf\n", ld);
    return 0;
}
