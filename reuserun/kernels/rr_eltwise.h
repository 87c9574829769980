/* Per-pixel kernels on NHWC views: activations, broadcast binaries, gathers (slice, pad,
 * nearest resize, channel copies), bilinear resize and pooling. Each computes one output pixel
 * from a fixed formula of its position, in channel chunks of RR_CHUNK. */
#ifndef RR_ELTWISE_H
#define RR_ELTWISE_H

#include "rr_simd.h"

#define RR_CHUNK 256

/* An operand of a broadcast binary op: element (p, c) is at base[p * ps + c * cs]. */
typedef struct { const float *base; long ps; long cs; } rr_operand_t;

enum { BIN_ADD = 0, BIN_SUB, BIN_MUL, BIN_DIV };

/* One binary op on 8 lanes; the one formula of the pixel and span paths. */
static inline __attribute__((always_inline)) v8f rr_binop8(int op, v8f x, v8f y) {
    switch (op) {
    case BIN_ADD: return x + y;
    case BIN_SUB: return x - y;
    case BIN_MUL: return x * y;
    default: return x / y;
    }
}

typedef struct {
    float *y; int ldy; int C;
    int act; float alpha, beta;
    rr_operand_t a, b, slope;   /* unary ops use a (and slope for PRelu); binary use a and b */
    int binop;                  /* -1: unary */
} rr_ew_t;

static inline void rr_ew_pixel(const rr_ew_t *e, int p, uint8_t *mask, float thr) {
    float tmp[RR_CHUNK];
    int changed = 0;
    for (int c0 = 0; c0 < e->C; c0 += RR_CHUNK) {
        int nc = e->C - c0 < RR_CHUNK ? e->C - c0 : RR_CHUNK;
        const float *pa = e->a.base + p * e->a.ps + c0 * e->a.cs;
        if (e->binop < 0) {
            const float *ps = e->slope.base ? e->slope.base + c0 * e->slope.cs : NULL;
            for (int j = 0; j < nc; j++)
                tmp[j] = rr_act(e->act, pa[j * e->a.cs], e->alpha, e->beta, ps ? ps[j * e->slope.cs] : 0.0f);
        } else if (e->a.cs == 1 && nc >= 8) {
            /* the common layouts (same-shape, per-channel and scalar operands), 8 lanes at a time;
               a width that is no multiple of 8 ends with the last 8 lanes, which overlap the block
               before: those lanes get the same values again (lane-wise IEEE ops, as the scalar
               loop below), and the inputs are read before anything is stored */
            const float *pb = e->b.base + p * e->b.ps + c0 * e->b.cs;
            for (int j0 = 0; j0 < nc; j0 += 8) {
                const int j = j0 + 8 <= nc ? j0 : nc - 8;
                v8f x = vload(pa + j), y = e->b.cs ? vload(pb + j) : vbroadcast(pb[0]);
                v8f r = rr_binop8(e->binop, x, y);
                if (e->act != ACT_NONE) r = vact(e->act, r, e->alpha, e->beta, vbroadcast(0.0f));
                vstore(tmp + j, r);
            }
        } else {
            const float *pb = e->b.base + p * e->b.ps + c0 * e->b.cs;
            long as = e->a.cs, bs = e->b.cs;
            switch (e->binop) {
            case BIN_ADD: for (int j = 0; j < nc; j++) tmp[j] = pa[j * as] + pb[j * bs]; break;
            case BIN_SUB: for (int j = 0; j < nc; j++) tmp[j] = pa[j * as] - pb[j * bs]; break;
            case BIN_MUL: for (int j = 0; j < nc; j++) tmp[j] = pa[j * as] * pb[j * bs]; break;
            default: for (int j = 0; j < nc; j++) tmp[j] = pa[j * as] / pb[j * bs]; break;
            }
            if (e->act != ACT_NONE)
                for (int j = 0; j < nc; j++) tmp[j] = rr_act(e->act, tmp[j], e->alpha, e->beta, 0.0f);
        }
        changed |= rr_store_tracked(e->y + (size_t)p * e->ldy + c0, tmp, nc, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* rr_ew_span's binary loop; binop, bvec (b per channel, else one value per pixel) and track
 * (compare with the cache) are constants where it is inlined. */
static inline __attribute__((always_inline)) void rr_ew_span_bin(
        const rr_ew_t *e, int p0, int n, uint8_t *mask, float thr, const int binop, const int bvec,
        const int track) {
    /* everything in locals: stores through y may alias *e as far as the compiler knows */
    const int C = e->C, act = e->act, ldy = e->ldy;
    const float alpha = e->alpha, beta = e->beta;
    const float *abase = e->a.base, *bbase = e->b.base;
    const long aps = e->a.ps, bps = e->b.ps;
    float *ybase = e->y;
    const v8f zero = vbroadcast(0.0f);
    for (int p = p0; p < p0 + n; p++) {
        const float *pa = abase + (long)p * aps, *pb = bbase + (long)p * bps;
        float *py = ybase + (size_t)p * ldy;
        const v8f yb = bvec ? zero : vbroadcast(pb[0]);
        int changed = 0;
        for (int j = 0; j < C; j += 8) {
            v8f r = rr_binop8(binop, vload(pa + j), bvec ? vload(pb + j) : yb);
            if (act != ACT_NONE) r = vact(act, r, alpha, beta, zero);
            if (!track) vstore(py + j, r); else changed |= rr_store8_tracked(py + j, r, thr);
        }
        if (changed && mask) mask[p] = 1;
    }
}

/* rr_ew_pixel over the consecutive pixels [p0, p0 + n), for channel counts that are multiples
 * of 8, with the per-pixel dispatch, scratch and copy taken out: each element still goes through
 * the instruction sequence rr_ew_pixel gives it (its 8-lane binary path; rr_act is lane 0 of
 * vact), so spans and single pixels agree bit for bit. Returns 0 when the layout is not one it
 * handles (the caller then goes pixel by pixel). */
static inline int rr_ew_span(const rr_ew_t *e, int p0, int n, uint8_t *mask, float thr) {
    const int C = e->C, act = e->act, ldy = e->ldy;
    const float alpha = e->alpha, beta = e->beta;
    if (C % 8 != 0 || e->a.cs != 1) return 0;
    if (e->binop >= 0) {
        /* one specialised loop per (op, vector or scalar b, tracked or not) */
        const int bvec = e->b.cs != 0, track = thr >= 0.0f;
#define RR_EW_CASE(op) \
        if (bvec && track) rr_ew_span_bin(e, p0, n, mask, thr, op, 1, 1); \
        else if (bvec) rr_ew_span_bin(e, p0, n, mask, thr, op, 1, 0); \
        else if (track) rr_ew_span_bin(e, p0, n, mask, thr, op, 0, 1); \
        else rr_ew_span_bin(e, p0, n, mask, thr, op, 0, 0);
        switch (e->binop) {
        case BIN_ADD: RR_EW_CASE(BIN_ADD) break;
        case BIN_SUB: RR_EW_CASE(BIN_SUB) break;
        case BIN_MUL: RR_EW_CASE(BIN_MUL) break;
        default: RR_EW_CASE(BIN_DIV) break;
        }
#undef RR_EW_CASE
        return 1;
    }
    const float *abase = e->a.base, *sl = e->slope.base;
    const long aps = e->a.ps, scs = e->slope.cs;
    float *ybase = e->y;
    const v8f zero = vbroadcast(0.0f);
    for (int p = p0; p < p0 + n; p++) {
        const float *pa = abase + (long)p * aps;
        float *py = ybase + (size_t)p * ldy;
        int changed = 0;
        for (int j = 0; j < C; j += 8) {
            v8f s = sl ? (scs ? vload(sl + j) : vbroadcast(sl[0])) : zero;
            v8f r = vact(act, vload(pa + j), alpha, beta, s);
            if (thr < 0.0f) vstore(py + j, r); else changed |= rr_store8_tracked(py + j, r, thr);
        }
        if (changed && mask) mask[p] = 1;
    }
    return 1;
}

/* y[oy, ox, c] = x[ymap[oy], xmap[ox], cmap[c]] (c itself without cmap) or `value` where a map
 * is < 0. */
typedef struct {
    const float *x; int W, ldx;
    float *y; int OW, ldy; int C;
    const int32_t *ymap, *xmap;
    float value;
    const int32_t *cmap;                /* a channel permutation (channel shuffle), or NULL */
} rr_gather_t;

/* Output pixel p at (oy, ox) (so is every per-pixel kernel below: a run of pixels steps along
 * its row instead of dividing for each). */
static inline void rr_gather_pixel(const rr_gather_t *g, int p, int oy, int ox, uint8_t *mask, float thr) {
    float tmp[RR_CHUNK];
    int iy = g->ymap[oy], ix = g->xmap[ox], changed = 0;
    float *dst = g->y + (size_t)p * g->ldy;
    if (iy >= 0 && ix >= 0 && g->cmap) {
        const float *src = g->x + ((size_t)iy * g->W + ix) * g->ldx;
        for (int c0 = 0; c0 < g->C; c0 += RR_CHUNK) {
            const int nc = g->C - c0 < RR_CHUNK ? g->C - c0 : RR_CHUNK;
            int j = 0;
            for (; j + 8 <= nc; j += 8) vstore(tmp + j, rr_gather(src, g->cmap + c0 + j));
            for (; j < nc; j++) tmp[j] = src[g->cmap[c0 + j]];
            changed |= rr_store_tracked(dst + c0, tmp, nc, thr);
        }
    } else if (iy >= 0 && ix >= 0) {  /* a copy: straight from the source row */
        changed = rr_store_tracked(dst, g->x + ((size_t)iy * g->W + ix) * g->ldx, g->C, thr);
    } else {
        for (int j = 0; j < RR_CHUNK && j < g->C; j++) tmp[j] = g->value;
        for (int c0 = 0; c0 < g->C; c0 += RR_CHUNK)
            changed |= rr_store_tracked(dst + c0, tmp, g->C - c0 < RR_CHUNK ? g->C - c0 : RR_CHUNK, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* Bilinear resize: per output row/column two source indices and weights. */
typedef struct {
    const float *x; int W, ldx;
    float *y; int OW, ldy; int C;
    const int32_t *y0, *y1, *x0, *x1;
    const float *wy0, *wy1, *wx0, *wx1;
} rr_linear_t;

static inline void rr_linear_pixel(const rr_linear_t *r, int p, int oy, int ox, uint8_t *mask, float thr) {
    float tmp[RR_CHUNK];
    int changed = 0;
    const float *a = r->x + ((size_t)r->y0[oy] * r->W + r->x0[ox]) * r->ldx;
    const float *b = r->x + ((size_t)r->y0[oy] * r->W + r->x1[ox]) * r->ldx;
    const float *c = r->x + ((size_t)r->y1[oy] * r->W + r->x0[ox]) * r->ldx;
    const float *d = r->x + ((size_t)r->y1[oy] * r->W + r->x1[ox]) * r->ldx;
    float wy0 = r->wy0[oy], wy1 = r->wy1[oy], wx0 = r->wx0[ox], wx1 = r->wx1[ox];
    if (r->C >= 8) {
        /* the scalar formula below, 8 channels at a time (the whole kernel uses this form for
           such widths, so its results do not depend on which pixels a frame computes); a width
           that is no multiple of 8 ends with the last 8 channels, overlapping the block before,
           whose lanes get the same values again */
        const v8f vx0 = vbroadcast(wx0), vx1 = vbroadcast(wx1), vy0 = vbroadcast(wy0), vy1 = vbroadcast(wy1);
        float *dst = r->y + (size_t)p * r->ldy;
        for (int j0 = 0; j0 < r->C; j0 += 8) {
            const int j = j0 + 8 <= r->C ? j0 : r->C - 8;
            v8f top = vload(a + j) * vx0 + vload(b + j) * vx1;
            v8f bot = vload(c + j) * vx0 + vload(d + j) * vx1;
            changed |= rr_store8_tracked(dst + j, top * vy0 + bot * vy1, thr);
        }
        if (changed && mask) mask[p] = 1;
        return;
    }
    for (int c0 = 0; c0 < r->C; c0 += RR_CHUNK) {
        int nc = r->C - c0 < RR_CHUNK ? r->C - c0 : RR_CHUNK;
        for (int j = 0; j < nc; j++) {
            float top = a[c0 + j] * wx0 + b[c0 + j] * wx1;
            float bot = c[c0 + j] * wx0 + d[c0 + j] * wx1;
            tmp[j] = top * wy0 + bot * wy1;
        }
        changed |= rr_store_tracked(r->y + (size_t)p * r->ldy + c0, tmp, nc, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* Max / average pooling. Taps outside the input are skipped (max) or counted per
 * count_include_pad (average); the divisor depends only on the position. */
typedef struct {
    const float *x; int H, W, ldx;
    float *y; int OH, OW, ldy; int C;
    int kh, kw, sh, sw, pt, pl, dh, dw;
    int is_max, count_include_pad;
    int ph_end, pw_end;        /* padded extent for count_include_pad: H + pt + pb, W + pl + pr */
} rr_pool_t;

/* A pixel whose window lies inside the input, 8 channels a vector (C a multiple of 8): the same
 * taps in the same order as the general path below, so the same bits (vmax_nan(acc, v) is its
 * "v is NaN or v > acc ? v : acc"), and every tap counts for the average. */
static inline __attribute__((always_inline)) void rr_pool_inside(
        const rr_pool_t *q, int p, int iy0, int ix0, uint8_t *mask, float thr, const int is_max,
        const int KH, const int KW) {
    /* KH, KW: the window when it is a constant after inlining (2x2, 3x3), else 0 */
    const int kh = KH ? KH : q->kh, kw = KW ? KW : q->kw;
    const long ldx = q->ldx, W = q->W, ystep = (long)q->dh * W * ldx, xstep = (long)q->dw * ldx;
    const float *base = q->x + ((long)iy0 * W + ix0) * ldx;
    float *const dst = q->y + (size_t)p * q->ldy;
    const v8f inv = vbroadcast((float)(kh * kw));
    int changed = 0;
    for (int c0 = 0; c0 < q->C; c0 += 8) {
        v8f acc = vbroadcast(is_max ? -INFINITY : 0.0f);
        for (int ky = 0; ky < kh; ky++) {
            const float *row = base + ky * ystep + c0;
            for (int kx = 0; kx < kw; kx++) {
                const v8f v = vload(row + kx * xstep);
                acc = is_max ? vmax_nan(acc, v) : acc + v;
            }
        }
        if (!is_max) acc = acc / inv;
        changed |= rr_store8_tracked(dst + c0, acc, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* Whether the window from input row iy0, column ix0 lies inside the input. */
static inline int rr_pool_window_inside(const rr_pool_t *q, int iy0, int ix0) {
    return iy0 >= 0 && ix0 >= 0 && iy0 + (q->kh - 1) * q->dh < q->H && ix0 + (q->kw - 1) * q->dw < q->W;
}

static inline void rr_pool_pixel(const rr_pool_t *q, int p, int oy, int ox, uint8_t *mask, float thr) {
    const int iy0 = oy * q->sh - q->pt, ix0 = ox * q->sw - q->pl;
    if (q->C % 8 == 0 && rr_pool_window_inside(q, iy0, ix0)) {
        if (q->is_max) rr_pool_inside(q, p, iy0, ix0, mask, thr, 1, 0, 0);
        else rr_pool_inside(q, p, iy0, ix0, mask, thr, 0, 0, 0);
        return;
    }
    float tmp[RR_CHUNK];
    int changed = 0;
    for (int c0 = 0; c0 < q->C; c0 += RR_CHUNK) {
        int nc = q->C - c0 < RR_CHUNK ? q->C - c0 : RR_CHUNK;
        int count = 0;
        for (int j = 0; j < nc; j++) tmp[j] = q->is_max ? -INFINITY : 0.0f;
        for (int ky = 0; ky < q->kh; ky++) {
            int iy = oy * q->sh - q->pt + ky * q->dh;
            for (int kx = 0; kx < q->kw; kx++) {
                int ix = ox * q->sw - q->pl + kx * q->dw;
                if (q->count_include_pad) {
                    /* pads count, the region beyond them (ceil_mode overhang) does not */
                    if (iy + q->pt < q->ph_end && ix + q->pl < q->pw_end) count++;
                }
                if (iy < 0 || iy >= q->H || ix < 0 || ix >= q->W) continue;
                if (!q->count_include_pad) count++;
                const float *src = q->x + ((size_t)iy * q->W + ix) * q->ldx + c0;
                if (q->is_max) { for (int j = 0; j < nc; j++) tmp[j] = src[j] != src[j] || src[j] > tmp[j] ? src[j] : tmp[j]; }
                else { for (int j = 0; j < nc; j++) tmp[j] += src[j]; }
            }
        }
        if (!q->is_max) {
            float inv = count > 0 ? (float)count : 1.0f;
            for (int j = 0; j < nc; j++) tmp[j] = tmp[j] / inv;
        }
        changed |= rr_store_tracked(q->y + (size_t)p * q->ldy + c0, tmp, nc, thr);
    }
    if (changed && mask) mask[p] = 1;
}



/* Global average / max pooling of channels c0..c0+nc (nc <= 8) over all npix pixels, in pixel
 * order; returns 1 when the tracked store changed anything. */
static inline int rr_global_pool_block(const float *x, int npix, int ldx, int c0, int nc, int is_max,
                                       float *out, float thr) {
    float tmp[8] = {0};
    v8f acc;
    if (nc == 8) {
        acc = vload(x + c0);
        if (!is_max) acc = vbroadcast(0.0f);
        for (int p = 0; p < npix; p++) {
            v8f v = vload(x + (size_t)p * ldx + c0);
            acc = is_max ? vmax_nan(acc, v) : acc + v;
        }
    } else {
        float part[8] = {0};
        memcpy(part, x + c0, (size_t)nc * sizeof(float));
        acc = is_max ? vload(part) : vbroadcast(0.0f);
        for (int p = 0; p < npix; p++) {
            memcpy(part, x + (size_t)p * ldx + c0, (size_t)nc * sizeof(float));
            acc = is_max ? vmax_nan(acc, vload(part)) : acc + vload(part);
        }
    }
    if (!is_max) acc = acc / vbroadcast((float)npix);
    vstore(tmp, acc);
    return rr_store_tracked(out + c0, tmp, nc, thr);
}

/* nb full blocks (8 * nb channels, nb <= 16) in one pass over the pixels: the same per-channel
 * order as rr_global_pool_block, with nb independent accumulators, so the adds do not wait on
 * each other and each pixel's channels are read once. Called with a constant nb, the blocks
 * unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) int rr_global_pool_blocks(
        const float *x, int npix, int ldx, int c0, int nb, int is_max, float *out, float thr) {
    float tmp[128];
    v8f a[16];
    const float *p0 = x + c0;
    for (int j = 0; j < nb; j++) a[j] = is_max ? vload(p0 + 8 * j) : vbroadcast(0.0f);
    if (is_max) {
        for (int p = 0; p < npix; p++) {
            const float *q = p0 + (size_t)p * ldx;
            for (int j = 0; j < nb; j++) a[j] = vmax_nan(a[j], vload(q + 8 * j));
        }
    } else {
        for (int p = 0; p < npix; p++) {
            const float *q = p0 + (size_t)p * ldx;
            for (int j = 0; j < nb; j++) a[j] = a[j] + vload(q + 8 * j);
        }
        v8f n = vbroadcast((float)npix);
        for (int j = 0; j < nb; j++) a[j] = a[j] / n;
    }
    for (int j = 0; j < nb; j++) vstore(tmp + 8 * j, a[j]);
    return rr_store_tracked(out + c0, tmp, 8 * nb, thr);
}

/* 128 and 32 channels at once (the global pool's work items). */
static inline int rr_global_pool_16(const float *x, int npix, int ldx, int c0, int is_max, float *out, float thr) {
    return rr_global_pool_blocks(x, npix, ldx, c0, 16, is_max, out, thr);
}

static inline int rr_global_pool_4(const float *x, int npix, int ldx, int c0, int is_max, float *out, float thr) {
    return rr_global_pool_blocks(x, npix, ldx, c0, 4, is_max, out, thr);
}

/* Each pixel's channels normalized: (x - mean) / sqrt(var + eps) * scale + bias, the mean and
 * variance over the pixel's C channels (a LayerNormalization over channels). */
typedef struct {
    const float *x; int ldx;
    float *y; int ldy; int C;
    const float *scale, *bias; float eps;
} rr_norm_t;

/* The sum of x[0, n): eight running lanes, then the lanes and the tail in a fixed order, the
 * same for every pixel. */
static inline float rr_channel_sum(const float *x, int n) {
    v8f acc = vbroadcast(0.0f);
    int j = 0;
    for (; j + 8 <= n; j += 8) acc = acc + vload(x + j);
    float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++) total += x[j];
    return total;
}

static inline void rr_norm_pixel(const rr_norm_t *q, int p, uint8_t *mask, float thr) {
    float tmp[RR_CHUNK];
    const float *px = q->x + (size_t)p * q->ldx;
    const int C = q->C;
    const float mean = rr_channel_sum(px, C) / (float)C;
    /* the squares summed around the mean, a second pass: it keeps the variance's digits where
     * the mean is large against the spread */
    float var;
    {
        v8f acc = vbroadcast(0.0f);
        const v8f m = vbroadcast(mean);
        int j = 0;
        for (; j + 8 <= C; j += 8) { const v8f d = vload(px + j) - m; acc = vfma(d, d, acc); }
        var = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; j < C; j++) { const float d = px[j] - mean; var += d * d; }
    }
    const float inv = 1.0f / sqrtf(var / (float)C + q->eps);
    const v8f vm = vbroadcast(mean), vi = vbroadcast(inv);
    int changed = 0;
    for (int c0 = 0; c0 < C; c0 += RR_CHUNK) {
        const int nc = C - c0 < RR_CHUNK ? C - c0 : RR_CHUNK;
        int j = 0;
        for (; j + 8 <= nc; j += 8)
            vstore(tmp + j, vfma((vload(px + c0 + j) - vm) * vi, vload(q->scale + c0 + j), vload(q->bias + c0 + j)));
        for (; j < nc; j++) {
            v8f r = vfma((vbroadcast(px[c0 + j]) - vm) * vi, vbroadcast(q->scale[c0 + j]), vbroadcast(q->bias[c0 + j]));
            tmp[j] = r[0];
        }
        changed |= rr_store_tracked(q->y + (size_t)p * q->ldy + c0, tmp, nc, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* Each pixel's channels through a softmax: exp(x - max) / sum (a Softmax over the channel axis,
 * a segmentation or detection head's per-pixel scores). */
typedef struct {
    const float *x; int ldx;
    float *y; int ldy; int C;
} rr_softmax_t;

static inline void rr_softmax_pixel(const rr_softmax_t *q, int p, uint8_t *mask, float thr) {
    /* every lane computes its own element alike (vexp, a division), so an element's exp has the
     * same bits whether 8 or 1 of them go at a time; only the sum's order is fixed here */
    float tmp[RR_CHUNK];
    const float *px = q->x + (size_t)p * q->ldx;
    const int C = q->C;
    float m = px[0];
    for (int j = 1; j < C; j++) m = px[j] > m ? px[j] : m;  /* a NaN is skipped; its exp makes the sum NaN */
    const v8f vm = vbroadcast(m);
    v8f acc = vbroadcast(0.0f);
    int j = 0;
    for (; j + 8 <= C; j += 8) acc = acc + vexp(vload(px + j) - vm);
    float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < C; j++) sum += vexp(vbroadcast(px[j]) - vm)[0];
    const v8f vs = vbroadcast(sum);
    int changed = 0;
    for (int c0 = 0; c0 < C; c0 += RR_CHUNK) {
        const int nc = C - c0 < RR_CHUNK ? C - c0 : RR_CHUNK;
        int k = 0;
        for (; k + 8 <= nc; k += 8) vstore(tmp + k, vexp(vload(px + c0 + k) - vm) / vs);
        for (; k < nc; k++) tmp[k] = (vexp(vbroadcast(px[c0 + k]) - vm) / vs)[0];
        changed |= rr_store_tracked(q->y + (size_t)p * q->ldy + c0, tmp, nc, thr);
    }
    if (changed && mask) mask[p] = 1;
}

/* One entry point so a single parallel loop serves every per-pixel kernel. */
enum { RR_K_EW = 0, RR_K_GATHER, RR_K_LINEAR, RR_K_POOL, RR_K_NORM, RR_K_SOFTMAX };

static inline void rr_pixel(int kind, const void *params, int p, int oy, int ox, uint8_t *mask, float thr) {
    switch (kind) {
    case RR_K_EW: rr_ew_pixel((const rr_ew_t *)params, p, mask, thr); break;
    case RR_K_GATHER: rr_gather_pixel((const rr_gather_t *)params, p, oy, ox, mask, thr); break;
    case RR_K_LINEAR: rr_linear_pixel((const rr_linear_t *)params, p, oy, ox, mask, thr); break;
    case RR_K_NORM: rr_norm_pixel((const rr_norm_t *)params, p, mask, thr); break;
    case RR_K_SOFTMAX: rr_softmax_pixel((const rr_softmax_t *)params, p, mask, thr); break;
    default: rr_pool_pixel((const rr_pool_t *)params, p, oy, ox, mask, thr); break;
    }
}

/* The width of a kernel's output grid (elementwise kernels use no coordinates). */
static inline int rr_pixel_width(int kind, const void *params) {
    switch (kind) {
    case RR_K_GATHER: return ((const rr_gather_t *)params)->OW;
    case RR_K_LINEAR: return ((const rr_linear_t *)params)->OW;
    case RR_K_POOL: return ((const rr_pool_t *)params)->OW;
    default: return 1 << 30;
    }
}

/* Pooled pixels [p0, p0 + n) along rows: whole windows through rr_pool_inside from one loop
 * with the pool kind fixed, the rest through rr_pool_pixel. */
static inline __attribute__((always_inline)) void rr_pool_span_kind(
        const rr_pool_t *q, int p0, int n, uint8_t *mask, float thr, const int is_max, const int K) {
    int oy = p0 / q->OW, ox = p0 - oy * q->OW;
    for (int p = p0; p < p0 + n; p++) {
        const int iy0 = oy * q->sh - q->pt, ix0 = ox * q->sw - q->pl;
        if (rr_pool_window_inside(q, iy0, ix0))
            rr_pool_inside(q, p, iy0, ix0, mask, thr, is_max, K, K);
        else
            rr_pool_pixel(q, p, oy, ox, mask, thr);
        if (++ox == q->OW) {
            ox = 0;
            oy++;
        }
    }
}

/* rr_pool_span_kind with the pool's kind and, for the common square windows, its size as
 * constants; returns 0 (nothing done) unless the channels come 8 a vector. */
static inline int rr_pool_span(const rr_pool_t *q, int p0, int n, uint8_t *mask, float thr) {
    if (q->C % 8 != 0)
        return 0;
    const int k = q->kh == q->kw && (q->kh == 2 || q->kh == 3) ? q->kh : 0;
#define RR_POOL_SPAN(M) { if (k == 2) rr_pool_span_kind(q, p0, n, mask, thr, M, 2); \
                          else if (k == 3) rr_pool_span_kind(q, p0, n, mask, thr, M, 3); \
                          else rr_pool_span_kind(q, p0, n, mask, thr, M, 0); }
    if (q->is_max) RR_POOL_SPAN(1) else RR_POOL_SPAN(0)
#undef RR_POOL_SPAN
    return 1;
}

/* rr_pixel over the consecutive pixels [p0, p0 + n), stepping along rows. */
static inline void rr_pixel_span(int kind, const void *params, int p0, int n, uint8_t *mask, float thr) {
    if (kind == RR_K_EW && rr_ew_span((const rr_ew_t *)params, p0, n, mask, thr)) return;
    if (kind == RR_K_POOL && rr_pool_span((const rr_pool_t *)params, p0, n, mask, thr)) return;
    const int OW = rr_pixel_width(kind, params);
    int oy = p0 / OW, ox = p0 - oy * OW;
    for (int p = p0; p < p0 + n; p++) {
        rr_pixel(kind, params, p, oy, ox, mask, thr);
        if (++ox == OW) {
            ox = 0;
            oy++;
        }
    }
}

/* rr_pixel over pix[i0:i1], a run of consecutive pixels at a time. */
static inline void rr_pixel_list(int kind, const void *params, const int32_t *pix, int i0, int i1,
                                 uint8_t *mask, float thr) {
    int i = i0;
    while (i < i1) {
        int j = i + 1;
        while (j < i1 && pix[j] == pix[j - 1] + 1) j++;
        rr_pixel_span(kind, params, pix[i], j - i, mask, thr);
        i = j;
    }
}
#endif
