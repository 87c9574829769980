/* Shared C helpers for reuserun's kernels.
 *
 * Exactness rule: every output element is computed by the same instruction sequence whatever
 * region it belongs to, so incremental results are bit-identical to dense ones. We therefore
 * build with -ffp-contract=off and spell every fused multiply-add out explicitly (vfma).
 */
#ifndef RR_SIMD_H
#define RR_SIMD_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v8f __attribute__((vector_size(32)));

/* Keeps a loaded vector in a register, so one load feeds several FMAs rather than being folded
   into each as a memory operand. The same arithmetic either way; only where a register holds the
   whole vector (AVX's ymm) can the compiler be told so. */
#if defined(__AVX__)
#define RR_KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define RR_KEEP_IN_REGISTER(v) ((void)(v))
#endif

#if defined(__AVX__)
#include <immintrin.h>
static inline v8f vload(const float *p) { return (v8f)_mm256_loadu_ps(p); }
static inline void vstore(float *p, v8f v) { _mm256_storeu_ps(p, (__m256)v); }
#else
static inline v8f vload(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, v8f v) { memcpy(p, &v, sizeof v); }
#endif

/* a * b + c. RR_FUSED_FMA says whether it rounds once (x86 FMA, AArch64 NEON) or twice (the
 * portable form, which -ffp-contract=off keeps apart): results differ between the two, never
 * within one build. */
#if defined(__FMA__) && defined(__AVX__)
#define RR_FUSED_FMA 1
static inline v8f vfma(v8f a, v8f b, v8f c) { return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define RR_FUSED_FMA 1
/* a v8f is two NEON registers: one vfmaq_f32 (c + a * b, rounded once) per half */
typedef union { v8f v; float32x4_t h[2]; } rr_v8f_halves;
static inline v8f vfma(v8f a, v8f b, v8f c) {
    const rr_v8f_halves x = {a}, y = {b}, z = {c};
    rr_v8f_halves r;
    r.h[0] = vfmaq_f32(z.h[0], x.h[0], y.h[0]);
    r.h[1] = vfmaq_f32(z.h[1], x.h[1], y.h[1]);
    return r.v;
}
#else
#define RR_FUSED_FMA 0
static inline v8f vfma(v8f a, v8f b, v8f c) { return a * b + c; }
#endif
static inline v8f vbroadcast(float x) { v8f v = {x, x, x, x, x, x, x, x}; return v; }

/* 1 / d within about 1 ulp: the reciprocal estimate and one Newton step, several times cheaper
 * than a division (sigmoid-gated activations divide once per output element). */
#if defined(__AVX__)
static inline v8f vrecip(v8f d) {
    const v8f r = (v8f)_mm256_rcp_ps((__m256)d);
    return r * (vbroadcast(2.0f) - d * r);
}
#elif defined(__aarch64__) && defined(__ARM_NEON)
/* the estimate (8 bits) and two Newton steps (vrecpsq_f32: 2 - d * r) */
static inline v8f vrecip(v8f d) {
    const rr_v8f_halves x = {d};
    rr_v8f_halves r;
    for (int h = 0; h < 2; h++) {
        float32x4_t e = vrecpeq_f32(x.h[h]);
        e = vmulq_f32(e, vrecpsq_f32(x.h[h], e));
        r.h[h] = vmulq_f32(e, vrecpsq_f32(x.h[h], e));
    }
    return r.v;
}
#else
static inline v8f vrecip(v8f d) { return vbroadcast(1.0f) / d; }
#endif

typedef int32_t v8i __attribute__((vector_size(32)));
static inline v8i vbroadcast_i(int x) { v8i v = {x, x, x, x, x, x, x, x}; return v; }

/* Lanes [0, n) set, for vload_mask. */
static inline v8i vmask_n(int n) {
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    return lane < vbroadcast_i(n);
}

/* p[lane] where m is set, 0 elsewhere, never touching memory outside the set lanes (a row's
 * tail: past it lies the next pixel or the buffer's end). */
#if defined(__AVX__)
static inline v8f vload_mask(const float *p, v8i m) { return (v8f)_mm256_maskload_ps(p, (__m256i)m); }
#else
static inline v8f vload_mask(const float *p, v8i m) {
    v8f v = vbroadcast(0.0f);
    for (int i = 0; i < 8; i++) if (m[i]) v[i] = p[i];
    return v;
}
#endif

/* Lane r: the sum of a[r]'s eight lanes, ((0+1) + (2+3)) + ((4+5) + (6+7)) for every r. */
#if defined(__AVX__)
static inline v8f vhsum8(const v8f *a) {
    const __m256 t0 = _mm256_hadd_ps((__m256)a[0], (__m256)a[1]), t1 = _mm256_hadd_ps((__m256)a[2], (__m256)a[3]);
    const __m256 t2 = _mm256_hadd_ps((__m256)a[4], (__m256)a[5]), t3 = _mm256_hadd_ps((__m256)a[6], (__m256)a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return (v8f)_mm256_permute2f128_ps(u0, u1, 0x20) + (v8f)_mm256_permute2f128_ps(u0, u1, 0x31);
}
#else
static inline v8f vhsum8(const v8f *a) {
    v8f s;
    for (int r = 0; r < 8; r++)
        s[r] = ((a[r][0] + a[r][1]) + (a[r][2] + a[r][3])) + ((a[r][4] + a[r][5]) + (a[r][6] + a[r][7]));
    return s;
}
#endif

/* Whether any lane of a comparison result is true (vany), and which (vlanes: bit l for lane l). */
#if defined(__AVX__)
static inline int vany(v8i m) { return _mm256_movemask_ps((__m256)m) != 0; }
static inline int vlanes(v8i m) { return _mm256_movemask_ps((__m256)m); }
#else
static inline int vany(v8i m) { int hit = 0; for (int i = 0; i < 8; i++) hit |= m[i]; return hit != 0; }
static inline int vlanes(v8i m) { int bits = 0; for (int i = 0; i < 8; i++) bits |= (m[i] != 0) << i; return bits; }
#endif

/* Lane-wise select: m lanes are all ones (true) or zeros, as vector comparisons give. */
static inline v8f vsel(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }
#if defined(__AVX__)
/* one instruction each; vmax and vmin give the generic forms' bits (a NaN operand yields b, so
 * the clamps below take the data as b: a NaN passes through, as in onnxruntime), and vfloor does
 * within the int32 range, all vexp asks of it */
static inline v8f vmax(v8f a, v8f b) { return (v8f)_mm256_max_ps((__m256)a, (__m256)b); }
static inline v8f vmin(v8f a, v8f b) { return (v8f)_mm256_min_ps((__m256)a, (__m256)b); }
static inline v8f vfloor(v8f x) { return (v8f)_mm256_floor_ps((__m256)x); }
#else
static inline v8f vmax(v8f a, v8f b) { return vsel(a > b, a, b); }
static inline v8f vmin(v8f a, v8f b) { return vsel(a < b, a, b); }
static inline v8f vfloor(v8f x) {
    v8f t = __builtin_convertvector(__builtin_convertvector(x, v8i), v8f);
    return vsel(t > x, t - vbroadcast(1.0f), t);
}
#endif

/* The larger of acc and v, and NaN when either is NaN (a max pool keeps a NaN as onnxruntime's
 * MaxPool does): "v > acc ? v : acc" otherwise, the generic forms' bits. */
static inline v8f vmax_nan(v8f acc, v8f v) { return vsel(v != v, v, vmax(v, acc)); }

/* exp on 8 lanes (Cephes' single-precision scheme, ~1 ulp), its range reduction and polynomial
 * as fused multiply-adds: about half the instructions of separate products and sums, which
 * matters in SiLU and sigmoid epilogues that take one exp per output element. Deterministic: one
 * instruction sequence for every element, which is all exactness needs. */
static inline v8f vexp(v8f x) {
    x = vmin(vbroadcast(88.3f), vmax(vbroadcast(-87.3f), x));
    const v8f fx = vfloor(vfma(x, vbroadcast(1.44269504088896341f), vbroadcast(0.5f)));
    x = vfma(fx, vbroadcast(-0.693359375f), x);
    x = vfma(fx, vbroadcast(2.12194440e-4f), x);
    const v8f z = x * x;
    v8f y = vbroadcast(1.9875691500e-4f);
    y = vfma(y, x, vbroadcast(1.3981999507e-3f));
    y = vfma(y, x, vbroadcast(8.3334519073e-3f));
    y = vfma(y, x, vbroadcast(4.1665795894e-2f));
    y = vfma(y, x, vbroadcast(1.6666665459e-1f));
    y = vfma(y, x, vbroadcast(5.0000001201e-1f));
    y = vfma(y, z, x) + vbroadcast(1.0f);
    const v8i e = (__builtin_convertvector(fx, v8i) + 127) << 23;
    return y * (v8f)e;
}

/* log on 8 lanes of positive finite values (Cephes' single-precision scheme, ~1 ulp). */
static inline v8f vlog(v8f x) {
    v8i bits = (v8i)x;
    v8f e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, v8f);
    v8f m = (v8f)((bits & 0x007fffff) | 0x3f000000);  /* mantissa in [0.5, 1) */
    const v8i small = m < vbroadcast(0.707106781186547524f);
    e = vsel(small, e - vbroadcast(1.0f), e);
    m = vsel(small, m + m, m) - vbroadcast(1.0f);
    const v8f z = m * m;
    v8f y = vbroadcast(7.0376836292e-2f);
    y = y * m + vbroadcast(-1.1514610310e-1f);
    y = y * m + vbroadcast(1.1676998740e-1f);
    y = y * m + vbroadcast(-1.2420140846e-1f);
    y = y * m + vbroadcast(1.4249322787e-1f);
    y = y * m + vbroadcast(-1.6668057665e-1f);
    y = y * m + vbroadcast(2.0000714765e-1f);
    y = y * m + vbroadcast(-2.4999993993e-1f);
    y = y * m + vbroadcast(3.3333331174e-1f);
    y = y * m * z;
    y = y + e * vbroadcast(-2.12194440e-4f) - z * vbroadcast(0.5f);
    return m + y + e * vbroadcast(0.693359375f);
}

/* log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|)), log1p by Kahan's trick
 * (log(u) t / (u - 1) with u = 1 + t rounded; t where u rounds to 1), so the far negative tail
 * keeps its relative precision. */
static inline v8f vsoftplus(v8f x) {
    const v8f zero = vbroadcast(0.0f), one = vbroadcast(1.0f);
    const v8f t = vexp(zero - vmax(x, zero - x)), u = one + t, d = u - one;
    return vmax(zero, x) + vsel(d == zero, t, vlog(u) * (t / vsel(d == zero, one, d)));
}

/* erf on 8 lanes within about 3e-7 absolute: Numerical Recipes' erfc (fractional error below
 * 1.2e-7; its 1 / (1 + |x| / 2) by vrecip) as 1 - erfc, and an odd Taylor polynomial below 0.5, where 1 - erfc would lose the
 * small values' digits. The same formula as reuserun/frontend/reference.py's numpy erf. */
static inline v8f verf(v8f x) {
    const v8f one = vbroadcast(1.0f);
    const v8f a = vmax(x, vbroadcast(0.0f) - x);
    const v8f t = vrecip(vfma(vbroadcast(0.5f), a, one));
    v8f p = vbroadcast(0.17087277f);
    p = vfma(p, t, vbroadcast(-0.82215223f));
    p = vfma(p, t, vbroadcast(1.48851587f));
    p = vfma(p, t, vbroadcast(-1.13520398f));
    p = vfma(p, t, vbroadcast(0.27886807f));
    p = vfma(p, t, vbroadcast(-0.18628806f));
    p = vfma(p, t, vbroadcast(0.09678418f));
    p = vfma(p, t, vbroadcast(0.37409196f));
    p = vfma(p, t, vbroadcast(1.00002368f));
    p = vfma(p, t, vbroadcast(-1.26551223f));
    const v8f big = one - t * vexp(p - a * a);
    const v8f x2 = x * x;
    v8f q = vbroadcast(-0.0008548327023450852f);
    q = vfma(q, x2, vbroadcast(0.005223977625442188f));
    q = vfma(q, x2, vbroadcast(-0.026866170645131252f));
    q = vfma(q, x2, vbroadcast(0.11283791670955126f));
    q = vfma(q, x2, vbroadcast(-0.37612638903183754f));
    q = vfma(q, x2, vbroadcast(1.1283791670955126f));
    const v8i sign = (v8i)x & vbroadcast_i((int)0x80000000);
    return vsel(a < vbroadcast(0.5f), x * q, (v8f)((v8i)big | sign));
}

/* Activation codes; Python reads them through kernels/info.pyx (ACT_CODES). */
enum {
    ACT_NONE = 0, ACT_RELU, ACT_LEAKY_RELU, ACT_CLIP, ACT_SIGMOID, ACT_HARD_SIGMOID,
    ACT_HARD_SWISH, ACT_TANH, ACT_ELU, ACT_SILU, ACT_PRELU, ACT_SOFTPLUS, ACT_MISH, ACT_GELU
};

/* Eight elements through an activation; `slope` is PRelu's per-channel slope (8 lanes). */
static inline __attribute__((always_inline)) v8f vact(int act, v8f v, float alpha, float beta, v8f slope) {
    const v8f zero = vbroadcast(0.0f), one = vbroadcast(1.0f);
    switch (act) {
    case ACT_RELU: return vmax(zero, v);
    case ACT_LEAKY_RELU: return vsel(v >= zero, v, v * vbroadcast(alpha));
    case ACT_PRELU: return vsel(v >= zero, v, v * slope);
    case ACT_CLIP: return vmin(vbroadcast(beta), vmax(vbroadcast(alpha), v));
    case ACT_SIGMOID: return vrecip(one + vexp(zero - v));
    case ACT_HARD_SIGMOID: return vmin(one, vmax(zero, v * vbroadcast(alpha) + vbroadcast(beta)));
    case ACT_HARD_SWISH: return v * vmin(one, vmax(zero, v * vbroadcast(1.0f / 6.0f) + vbroadcast(0.5f)));
    case ACT_TANH: return vbroadcast(2.0f) / (one + vexp(v * vbroadcast(-2.0f))) - one;
    case ACT_ELU: return vsel(v >= zero, v, vbroadcast(alpha) * (vexp(v) - one));
    case ACT_SILU: return v * vrecip(one + vexp(zero - v));
    case ACT_SOFTPLUS: return vsoftplus(v);
    case ACT_MISH: {  /* x tanh(softplus(x)) = x n (n + 2) / (n (n + 2) + 2), n = exp(x) */
        const v8f n = vexp(vmin(vbroadcast(20.0f), v)), q = n * (n + vbroadcast(2.0f));
        return v * q / (q + vbroadcast(2.0f));
    }
    case ACT_GELU: return vbroadcast(0.5f) * v * (one + verf(v * vbroadcast(0.70710678118654752f)));
    default: return v;
    }
}

/* switch (act) { RR_ACT_CASES(F) default: F(act); }: calls F with the common activations as
 * compile-time constants, so a hot loop inlined into F runs without vact's switch. */
#define RR_ACT_CASES(F) \
    case ACT_NONE: F(ACT_NONE); break; \
    case ACT_RELU: F(ACT_RELU); break; \
    case ACT_CLIP: F(ACT_CLIP); break; \
    case ACT_LEAKY_RELU: F(ACT_LEAKY_RELU); break; \
    case ACT_HARD_SWISH: F(ACT_HARD_SWISH); break; \
    case ACT_SILU: F(ACT_SILU); break; \
    case ACT_GELU: F(ACT_GELU); break;

/* One element through an activation: lane 0 of vact, so scalar and vector paths agree. */
static inline float rr_act(int act, float v, float alpha, float beta, float slope) {
    v8f r = vact(act, vbroadcast(v), alpha, beta, vbroadcast(slope));
    return r[0];
}

/* Does `now` count as changed from `ref`? thr == 0: any bit differs; else |now - ref| > thr. */
static inline int rr_differs(float now, float ref, float thr) {
    if (thr == 0.0f) {
        uint32_t a, b;
        memcpy(&a, &now, 4); memcpy(&b, &ref, 4);
        return a != b;
    }
    return !(fabsf(now - ref) <= thr);
}

/* Store `n` results into `dst`, keeping the cached reference where the value moved by no more
 * than `thr` (thr < 0: always write, no tracking). Returns 1 when anything was written. */
static inline int rr_store_tracked(float *dst, const float *src, int n, float thr) {
    int changed = 0;
    if (thr < 0.0f) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return 1;
    }
    if (thr == 0.0f) {
        /* exact mode compares bits, so -0.0 vs 0.0 or a NaN payload counts as a change; equal
         * bits may be stored again, so the loop has no branch and vectorises */
        uint32_t diff = 0;
        for (int i = 0; i < n; i++) {
            uint32_t a, b;
            memcpy(&a, dst + i, 4); memcpy(&b, src + i, 4);
            diff |= a ^ b;
        }
        memcpy(dst, src, (size_t)n * sizeof(float));
        return diff != 0;
    }
    for (int i = 0; i < n; i++) {
        if (!(fabsf(src[i] - dst[i]) <= thr)) { dst[i] = src[i]; changed = 1; }
    }
    return changed;
}

/* rr_store_tracked for 8 lanes, saying which lanes changed: bit l for lane l (all of them when
 * thr < 0). */
static inline int rr_store8_lanes(float *dst, v8f v, float thr) {
    if (thr < 0.0f) { vstore(dst, v); return 0xff; }
    v8f old = vload(dst);
    v8i changed;
    if (thr == 0.0f) {
        changed = (v8i)v != (v8i)old;
    } else {
        v8f d = v - old;
        v8f ad = vsel(d < vbroadcast(0.0f), vbroadcast(0.0f) - d, d);
        changed = ~(ad <= vbroadcast(thr));
        v = vsel(changed, v, old);
    }
    const int bits = vlanes(changed);
    if (bits) vstore(dst, v);
    return bits;
}

static inline int rr_store8_tracked(float *dst, v8f v, float thr) {
    return rr_store8_lanes(dst, v, thr) != 0;
}

/* base[idx[l]] in lane l */
static inline v8f rr_gather(const float *base, const int32_t *idx) {
#if defined(__AVX2__)
    return _mm256_i32gather_ps(base, _mm256_loadu_si256((const __m256i *)idx), 4);
#else
    v8f v;
    for (int l = 0; l < 8; l++) v[l] = base[idx[l]];
    return v;
#endif
}

#define RR_MAX_THREADS 1024
static inline int rr_num_threads(int requested) {
#ifdef _OPENMP
    if (requested > RR_MAX_THREADS) return RR_MAX_THREADS;  /* as options.MAX_THREADS */
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

/* A fork/join with sleeping OpenMP threads costs 20 us alone and more in a run of small kernels,
 * each waking the threads again (measured on the 2-core VM: the keyword spotter's 10 ms hop took
 * 236-277 us on 2 threads and 194-220 us on 1 with thresholds half and a quarter of these). A
 * parallel loop splits only above about 60 us of single-thread work. */
#define RR_PAR_MACS (1L << 20)
#define RR_PAR_ELEMS (1L << 17)
/* A conv over a few pixels mostly reads its weights, from memory: a squeeze-excite block's
 * 672 -> 168 layer on one pixel took 27 us, as long as 12 MACs a weight. Counted as this many
 * MACs each, such layers split their output channels between the threads. */
#define RR_WEIGHT_READ_MACS 8
/* Whole-frame passes (diffing a frame against its reference, loading it, moving caches, writing
 * output mirrors) are memory-bound. Those before the steps come when the other thread has gone
 * to sleep since the last frame, and one thread is as fast below about a million elements; the
 * output mirrors, after the steps, measured no faster on two (320x320x3, threads spinning). On
 * the 2-core VM, still frames of the 320-px models with this bound instead of RR_PAR_ELEMS
 * (alternating in one process): MobileNetV3 228 -> 170 us, YOLO 488 -> 418, U-Net 310 -> 252,
 * ResNet 250 -> 196; full frames unchanged. */
#define RR_PAR_FRAME_ELEMS (1L << 20)

/* Below this many elements a small Python-called kernel (a classifier after a global pool)
 * keeps the GIL: released, it goes to another Python thread waiting for it (run_variants'
 * workers), and getting it back waits for that thread's Python. */
#define RR_NOGIL_ELEMS (1L << 14)

static inline int rr_threads_for(int requested, long work, long min_work) {
    return work < min_work ? 1 : rr_num_threads(requested);
}

/* Parallel loops hand out work dynamically, in a few shares per thread: on a shared machine one
 * core often runs slower than the other for a while (another tenant, a late wake-up), and a
 * static split waits for it. Measured on the 2-core VM, ResNet-like convs at 2 threads: 1.37-1.41x
 * the 1-thread speed with static splits, 1.58-1.62x dynamic, in the same runs. */
#define RR_SHARES_PER_THREAD 4

#endif
