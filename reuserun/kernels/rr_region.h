/* Row helpers for change detection (region.pyx), written with restrict pointers so the
 * compiler vectorises them: the Cython forms alias a uint8 mask with the float rows. */
#ifndef RR_REGION_H
#define RR_REGION_H

#include <stdint.h>

#include "rr_simd.h"

/* m[x] (first: =, else |=) whether bits of f[x] and r[x] differ, x < n; returns how many of
 * f[0..n) are NaN or Inf: one pass over the frame for both. */
static inline uint32_t rr_mark_diff_count_nonfinite(const uint32_t *restrict f, const uint32_t *restrict r,
                                                    uint8_t *restrict m, long n, int first) {
    uint32_t bad = 0;
    if (first) {
        for (long x = 0; x < n; x++) {
            bad += (f[x] & 0x7f800000u) == 0x7f800000u;
            m[x] = f[x] != r[x];
        }
    } else {
        for (long x = 0; x < n; x++) {
            bad += (f[x] & 0x7f800000u) == 0x7f800000u;
            m[x] |= f[x] != r[x];
        }
    }
    return bad;
}

/* How many of f[0..n) are NaN or Inf (exponent bits all set). */
static inline uint32_t rr_count_nonfinite(const uint32_t *restrict f, long n) {
    uint32_t bad = 0;
    for (long x = 0; x < n; x++) bad += (f[x] & 0x7f800000u) == 0x7f800000u;
    return bad;
}

/* How many of m[0..n) are nonzero: 32 bytes a step, summed by psadbw. */
static inline uint32_t rr_count_nonzero(const uint8_t *restrict m, long n) {
    uint64_t c = 0;
    long x = 0;
#ifdef __AVX2__
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi8(1);
    __m256i acc = zero;
    for (; x + 32 <= n; x += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(m + x));
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_andnot_si256(_mm256_cmpeq_epi8(v, zero), one), zero));
    }
    c = (uint64_t)_mm256_extract_epi64(acc, 0) + (uint64_t)_mm256_extract_epi64(acc, 1)
        + (uint64_t)_mm256_extract_epi64(acc, 2) + (uint64_t)_mm256_extract_epi64(acc, 3);
#endif
    for (; x < n; x++) c += m[x] != 0;
    return (uint32_t)c;
}

/* The first x < n with m[x] nonzero, n when none: 32 bytes a step. */
static inline long rr_first_nonzero(const uint8_t *m, long n) {
    long x = 0;
#ifdef __AVX2__
    const __m256i zero = _mm256_setzero_si256();
    for (; x + 32 <= n; x += 32) {
        const uint32_t z = (uint32_t)_mm256_movemask_epi8(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(m + x)), zero));
        if (z != 0xffffffffu) return x + __builtin_ctz(~z);
    }
#endif
    for (; x < n; x++)
        if (m[x]) return x;
    return n;
}

/* The last x < n with m[x] nonzero, -1 when none: 32 bytes a step. */
static inline long rr_last_nonzero(const uint8_t *m, long n) {
    long x = n;
#ifdef __AVX2__
    const __m256i zero = _mm256_setzero_si256();
    for (; x >= 32; x -= 32) {
        const uint32_t z = (uint32_t)_mm256_movemask_epi8(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(m + x - 32)), zero));
        if (z != 0xffffffffu) return x - 1 - __builtin_clz(~z);
    }
#endif
    for (; x > 0; x--)
        if (m[x - 1]) return x - 1;
    return -1;
}

/* dst[x] |= src[x], x < n. */
static inline void rr_or_marks(uint8_t *restrict dst, const uint8_t *restrict src, long n) {
    for (long x = 0; x < n; x++) dst[x] |= src[x];
}

/* Pixels p0..p1 of a (C, npix) frame: where m[p] is set, each element that differs from the
 * reference (rr_differs) is written to the reference and to the channels-last cache row
 * buf + p * ldb (which holds the reference frame). Few marks: visit them. Many (camera noise
 * under a threshold): update the reference one plane at a time without branches, then copy the
 * marked pixels into the cache. There the test is a coin flip, and alternating between planes
 * that lie a multiple of 4 KB apart stalls each load behind the store before it; either cost
 * about 7 ns an element. */
static inline void rr_apply_rows(const float *restrict f, float *restrict ref, float *restrict buf,
                                 long ldb, const uint8_t *restrict m, long p0, long p1, long npix,
                                 int C, float thr) {
    const long marked = rr_count_nonzero(m + p0, p1 - p0);
    if (marked == 0) return;
    if (marked * 4 < p1 - p0) {
        for (long p = p0; p < p1; p++) {
            if (!m[p]) continue;
            for (int c = 0; c < C; c++) {
                const float v = f[c * npix + p];
                if (rr_differs(v, ref[c * npix + p], thr)) {
                    ref[c * npix + p] = v;
                    buf[p * ldb + c] = v;
                }
            }
        }
        return;
    }
    for (int c = 0; c < C; c++) {
        const float *fc = f + c * npix;
        float *rc = ref + c * npix;
        for (long p = p0; p < p1; p++) {
            const int take = (m[p] != 0) & rr_differs(fc[p], rc[p], thr);
            rc[p] = take ? fc[p] : rc[p];
        }
    }
    for (long p = p0; p < p1; p++) {
        if (!m[p]) continue;
        float *y = buf + p * ldb;
        for (int c = 0; c < C; c++) y[c] = ref[c * npix + p];
    }
}
#endif
