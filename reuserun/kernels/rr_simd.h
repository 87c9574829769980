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
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v8f __attribute__((vector_size(32)));

#if defined(__AVX__)
#include <immintrin.h>
static inline v8f vload(const float *p) { return (v8f)_mm256_loadu_ps(p); }
static inline void vstore(float *p, v8f v) { _mm256_storeu_ps(p, (__m256)v); }
#else
static inline v8f vload(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, v8f v) { memcpy(p, &v, sizeof v); }
#endif

#if defined(__FMA__) && defined(__AVX__)
static inline v8f vfma(v8f a, v8f b, v8f c) { return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#else
static inline v8f vfma(v8f a, v8f b, v8f c) { return a * b + c; }
#endif
static inline v8f vbroadcast(float x) { v8f v = {x, x, x, x, x, x, x, x}; return v; }

/* Activation codes; the order matches reuserun/kernels/acts.py. */
enum {
    ACT_NONE = 0, ACT_RELU, ACT_LEAKY_RELU, ACT_CLIP, ACT_SIGMOID, ACT_HARD_SIGMOID,
    ACT_HARD_SWISH, ACT_TANH, ACT_ELU, ACT_SILU, ACT_PRELU
};

/* One element through an activation; `slope` is PRelu's per-channel slope. */
static inline float rr_act(int act, float v, float alpha, float beta, float slope) {
    switch (act) {
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_LEAKY_RELU: return v >= 0.0f ? v : v * alpha;
    case ACT_PRELU: return v >= 0.0f ? v : v * slope;
    case ACT_CLIP: return v < alpha ? alpha : (v > beta ? beta : v);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case ACT_HARD_SIGMOID: { float t = alpha * v + beta; return t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t); }
    case ACT_HARD_SWISH: { float t = v * (1.0f / 6.0f) + 0.5f; t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t); return v * t; }
    case ACT_TANH: return tanhf(v);
    case ACT_ELU: return v >= 0.0f ? v : alpha * (expf(v) - 1.0f);
    case ACT_SILU: return v / (1.0f + expf(-v));
    default: return v;
    }
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
        /* exact mode compares bits, so -0.0 vs 0.0 or a NaN payload counts as a change */
        for (int i = 0; i < n; i++) {
            uint32_t a, b;
            memcpy(&a, dst + i, 4); memcpy(&b, src + i, 4);
            if (a != b) { dst[i] = src[i]; changed = 1; }
        }
        return changed;
    }
    for (int i = 0; i < n; i++) {
        if (!(fabsf(src[i] - dst[i]) <= thr)) { dst[i] = src[i]; changed = 1; }
    }
    return changed;
}

static inline int rr_num_threads(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

#endif
