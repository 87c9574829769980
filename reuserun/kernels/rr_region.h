/* Row helpers for change detection (region.pyx), written with restrict pointers so the
 * compiler vectorises them: the Cython forms alias a uint8 mask with the float rows. */
#ifndef RR_REGION_H
#define RR_REGION_H

#include <stdint.h>

/* m[x] (first: =, else |=) whether bits of f[x] and r[x] differ, x < n. */
static inline void rr_mark_diff(const uint32_t *restrict f, const uint32_t *restrict r,
                                uint8_t *restrict m, long n, int first) {
    if (first) for (long x = 0; x < n; x++) m[x] = f[x] != r[x];
    else for (long x = 0; x < n; x++) m[x] |= f[x] != r[x];
}

/* How many of f[0..n) are NaN or Inf (exponent bits all set). */
static inline uint32_t rr_count_nonfinite(const uint32_t *restrict f, long n) {
    uint32_t bad = 0;
    for (long x = 0; x < n; x++) bad += (f[x] & 0x7f800000u) == 0x7f800000u;
    return bad;
}

/* How many of m[0..n) are set. */
static inline uint32_t rr_count_marks(const uint8_t *restrict m, long n) {
    uint32_t c = 0;
    for (long x = 0; x < n; x++) c += m[x];
    return c;
}
#endif
