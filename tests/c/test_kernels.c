/* The C kernels on their own, for any target the compiler builds (x86-64 levels here, AArch64
 * under qemu-user): the vector helpers against libm and scalar code, and a conv tile against a
 * scalar convolution that adds in the kernel's order. Prints one line per failure; exit status
 * is the number of failures. Built and run by tests/test_c_kernels.py. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rr_conv.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static float rnd(unsigned *s) { *s = *s * 1664525u + 1013904223u; return ((*s >> 8) / 16777216.0f) * 2.0f - 1.0f; }

static float ulps(float a, float b) {
    if (a == b) return 0.0f;
    return fabsf(a - b) / fmaxf(fabsf(nextafterf(b, INFINITY) - b), 1e-45f);
}

static void test_helpers(void) {
    unsigned s = 1;
    for (int t = 0; t < 1000; t++) {
        float a[8], b[8], c[8], r[8];
        for (int i = 0; i < 8; i++) { a[i] = 8 * rnd(&s); b[i] = 8 * rnd(&s); c[i] = 8 * rnd(&s); }
        vstore(r, vfma(vload(a), vload(b), vload(c)));
        for (int i = 0; i < 8; i++) {
            volatile float p = a[i] * b[i];
            const float want = RR_FUSED_FMA ? fmaf(a[i], b[i], c[i]) : p + c[i];
            CHECK(memcmp(&r[i], &want, 4) == 0, "vfma lane %d: %.9g, want %.9g", i, r[i], want);
        }
    }
    float worst_exp = 0, worst_log = 0, worst_erf = 0, worst_recip = 0;
    for (int t = 0; t < 2000; t++) {  /* log and 1 / x on positive values */
        float x[8], l[8], q[8];
        for (int i = 0; i < 8; i++) x[i] = fabsf(40 * rnd(&s)) + 1e-3f;
        vstore(l, vlog(vload(x)));
        vstore(q, vrecip(vload(x)));
        for (int i = 0; i < 8; i++) {
            worst_log = fmaxf(worst_log, ulps(l[i], logf(x[i])));
            worst_recip = fmaxf(worst_recip, fabsf(q[i] * x[i] - 1.0f));
        }
    }
    for (int t = 0; t < 2000; t++) {  /* exp and erf against libm on their own inputs */
        float x[8], e[8], f[8];
        for (int i = 0; i < 8; i++) x[i] = 20 * rnd(&s);
        vstore(e, vexp(vload(x)));
        vstore(f, verf(vload(x) * vbroadcast(0.2f)));
        for (int i = 0; i < 8; i++) {
            worst_exp = fmaxf(worst_exp, ulps(e[i], expf(x[i])));
            worst_erf = fmaxf(worst_erf, fabsf(f[i] - erff(x[i] * 0.2f)));
        }
    }
    CHECK(worst_exp <= 3, "vexp: %.1f ulp from expf", worst_exp);
    CHECK(worst_log <= 3, "vlog: %.1f ulp from logf", worst_log);
    CHECK(worst_erf <= 1e-6f, "verf: %.3g from erff", worst_erf);
    CHECK(worst_recip <= 3e-7f, "vrecip: relative error %.3g", worst_recip);
    /* a max pool keeps NaN; a NaN operand of vmax yields its second */
    float nan_lane[8] = {0, NAN, 2, 3, 4, 5, 6, 7}, ones[8] = {1, 1, 1, 1, 1, 1, 1, 1}, r[8];
    vstore(r, vmax_nan(vload(ones), vload(nan_lane)));
    CHECK(isnan(r[1]) && r[0] == 1 && r[7] == 7, "vmax_nan");
    vstore(r, vmax(vload(nan_lane), vload(ones)));
    CHECK(r[1] == 1, "vmax(NaN, 1) should give 1");
    /* masked loads touch only their lanes: the tail of a buffer */
    float tail[3] = {1, 2, 3};
    vstore(r, vload_mask(tail, vmask_n(3)));
    CHECK(r[0] == 1 && r[2] == 3 && r[3] == 0 && r[7] == 0, "vload_mask");
    /* horizontal sums in their fixed order */
    v8f rows[8];
    for (int k = 0; k < 8; k++) for (int i = 0; i < 8; i++) rows[k][i] = rnd(&s);
    vstore(r, vhsum8(rows));
    for (int k = 0; k < 8; k++) {
        const float *a = (const float *)&rows[k];
        const float want = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        CHECK(memcmp(&r[k], &want, 4) == 0, "vhsum8 row %d", k);
    }
}

/* A 3x3 conv, stride 1, pad 1, over a 7x6 image of 5 channels into 16, every pixel through the
 * tiles the kernels use, against a scalar conv that adds taps, then channels, from 0. */
static void test_conv_tile(int act) {
    enum { H = 7, W = 6, CIN = 5, COUT = 16, K = 3, NTAP = K * K };
    static float x[H * W * CIN], y[H * W * COUT], w[COUT][CIN][NTAP], packed[NTAP * CIN * 16], bias[16];
    static float zeros[CIN * K + 16];
    unsigned s = 7;
    for (int i = 0; i < H * W * CIN; i++) x[i] = rnd(&s);
    for (int o = 0; o < COUT; o++) for (int ci = 0; ci < CIN; ci++) for (int t = 0; t < NTAP; t++) w[o][ci][t] = rnd(&s);
    for (int o = 0; o < COUT; o++) bias[o] = 0.1f * rnd(&s);
    for (int t = 0; t < NTAP; t++) for (int ci = 0; ci < CIN; ci++) for (int o = 0; o < 16; o++)
        packed[(t * CIN + ci) * 16 + o] = w[o][ci][t];
    rr_conv_t c;
    memset(&c, 0, sizeof c);
    c.x = x; c.H = H; c.W = W; c.ldx = CIN;
    c.y = y; c.OH = H; c.OW = W; c.ldy = COUT;
    c.kh = c.kw = K; c.sh = c.sw = 1; c.pt = c.pl = 1; c.dh = c.dw = 1;
    c.groups = 1; c.cin = CIN; c.cout = COUT; c.nocb = 1;
    c.w = packed; c.bias = bias; c.act = act; c.zeros = zeros;
    int32_t pix[H * W], taps[NTAP];
    for (int p = 0; p < H * W; p++) pix[p] = p;
    for (int t = 0; t < NTAP; t++) taps[t] = t;
    for (int p0 = 0; p0 < H * W; p0 += RR_MR) {
        const int m = H * W - p0 < RR_MR ? H * W - p0 : RR_MR;
        rr_conv_tile(&c, pix + p0, m, 0, 1, taps, NTAP, NULL, -1.0f);
    }
    float worst = 0;
    for (int oy = 0; oy < H; oy++) for (int ox = 0; ox < W; ox++) for (int o = 0; o < COUT; o++) {
        float acc = 0;
        for (int t = 0; t < NTAP; t++) {
            const int iy = oy - 1 + t / K, ix = ox - 1 + t % K;
            for (int ci = 0; ci < CIN; ci++) {
                const float v = (iy < 0 || iy >= H || ix < 0 || ix >= W) ? 0.0f : x[(iy * W + ix) * CIN + ci];
                volatile float p = v * w[o][ci][t];
                acc = RR_FUSED_FMA ? fmaf(v, w[o][ci][t], acc) : acc + p;
            }
        }
        acc += bias[o];
        if (act == ACT_RELU) acc = acc > 0 ? acc : 0;
        if (act == ACT_SILU) acc = acc / (1.0f + expf(-acc));
        const float got = y[(oy * W + ox) * COUT + o];
        if (act == ACT_SILU) worst = fmaxf(worst, fabsf(got - acc) / fmaxf(fabsf(acc), 1e-3f));
        else CHECK(memcmp(&got, &acc, 4) == 0, "conv act %d at (%d, %d, %d): %.9g, want %.9g", act, oy, ox, o, got, acc);
    }
    CHECK(worst <= 1e-6f, "conv with SiLU: relative error %.3g", worst);
}

int main(void) {
    test_helpers();
    test_conv_tile(ACT_NONE);
    test_conv_tile(ACT_RELU);
    test_conv_tile(ACT_SILU);
    printf("%s: %d failure(s), fused FMA %d\n",
#if defined(__aarch64__)
           "aarch64",
#elif defined(__AVX512F__)
           "x86-64 AVX-512",
#elif defined(__AVX2__)
           "x86-64 AVX2",
#else
           "x86-64",
#endif
           failures, RR_FUSED_FMA);
    return failures;
}
