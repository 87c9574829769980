/* Convolution micro-kernels over arbitrary output-pixel lists (NHWC).
 *
 * A tile is up to MR output pixels (any positions: they are gathered through per-tap row
 * pointers, XNNPACK-style) times 16 output channels (with AVX-512, up to four such blocks at
 * once). Each output element accumulates taps x input channels in an order fixed per layer,
 * starting from 0 (narrow layers keep two partial sums, see rr_conv_tile_narrow), then adds the
 * bias, applies the activation and any affine after it, so its value never depends on which
 * other pixels share its tile, which pixels a frame computes, or the vector width.
 */
#ifndef RR_CONV_H
#define RR_CONV_H

#include "rr_simd.h"

#define RR_MR 6
#define RR_MR_NARROW 7  /* narrow tiles: 7 pixels x 2 partial sums + 2 weight vectors fill the 16 registers */
#define RR_NR 16
#define RR_ROWWISE_MAX 2048  /* kw * cin bound for the row-wise K loop (stack scratch) */

typedef struct {
    const float *x; int H, W, ldx;      /* input view; x already offset to channel 0 */
    float *y; int OH, OW, ldy;          /* output view */
    int kh, kw, sh, sw, pt, pl, dh, dw;
    int transposed;                     /* ConvTranspose: gather form of the scatter */
    const int32_t *tiy, *tix;           /* transposed: input row / column per (tap row, output row)
                                           and (tap column, output column), -1 for none */
    int pointwise;                      /* 1x1, stride 1, no padding: input row p is output row p */
    int groups, cin, cout;              /* cin, cout per group */
    int nocb;                           /* 16-wide output-channel blocks per group */
    const float *w;                     /* packed [groups*nocb][kh*kw][cin][16] */
    const float *w1;                    /* one output channel: [kh*kw][cin rounded up to 8] */
    const float *bias;                  /* [groups*nocb*16], zero padded */
    const float *slope;                 /* PRelu slope, like bias, or NULL */
    int act; float alpha, beta;
    const float *post_scale, *post_shift;  /* affine after the activation, like bias, or NULL */
    const float *zeros;                 /* >= cin zeros, stands in for padding */
    const float *res; int ldr;          /* a residual added after the bias (an Add the conv
                                           feeds, fused in dense runs), or NULL; laid out like y,
                                           ldr apart */
    int res_first;                      /* the Add reads the residual first: residual + conv */
    int res_after_act;                  /* added after the activation, else before it */
} rr_conv_t;

/* Input row for output pixel (oy, ox) at tap (ky, kx), or the zero row. */
static inline const float *rr_conv_row(const rr_conv_t *c, int oy, int ox, int ky, int kx) {
    int iy, ix;
    if (!c->transposed) {
        iy = oy * c->sh - c->pt + ky * c->dh;
        ix = ox * c->sw - c->pl + kx * c->dw;
        if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) return c->zeros;
    } else {  /* looked up: the scatter's divisions and remainders, done once at load */
        iy = c->tiy[(size_t)ky * c->OH + oy];
        ix = c->tix[(size_t)kx * c->OW + ox];
        if (iy < 0 || ix < 0) return c->zeros;
    }
    return c->x + ((size_t)iy * c->W + ix) * c->ldx;
}

/* nb (a constant after inlining): 1 or 2 8-lane halves of a 16-channel block, or RR_NB_WIDE:
 * nbw (1 to RR_MAX_WIDE) consecutive 16-channel blocks, each in one 16-lane register (AVX-512:
 * the same FMA per lane in the same order, so the same bits). Several blocks share each
 * broadcast of an input value: with one, the broadcasts and the weight load outnumber the FMAs
 * and the loads, not the FMAs, set the pace. */
#define RR_NB_WIDE 3
#define RR_MAX_WIDE 4
#if defined(__AVX512F__)
#define RR_WIDE_FMA(i) { const __m512 a = _mm512_set1_ps(r##i[j]); \
    _Pragma("GCC unroll 4") for (int b = 0; b < nbw; b++) z[i][b] = _mm512_fmadd_ps(a, bz[b], z[i][b]); }
#define RR_WIDE_LOAD __m512 bz[RR_MAX_WIDE]; \
    _Pragma("GCC unroll 4") for (int b = 0; b < nbw; b++) bz[b] = _mm512_loadu_ps(wp + b * bstride);
#else
#define RR_WIDE_FMA(i) {}
#define RR_WIDE_LOAD
#endif

/* Whether 16-channel blocks take the 16-lane tiles: on with AVX-512 unless REUSERUN_NO_AVX512=1
 * (to compare the two, which give the same bits). */
static inline int rr_wide_tiles(void) {
    static int wide = -1;
    if (wide < 0) {
        const char *e = getenv("REUSERUN_NO_AVX512");
        wide = !(e && e[0] == '1');
    }
    return wide;
}
#define RR_ROW_FMA(i) if (nb == RR_NB_WIDE) RR_WIDE_FMA(i) else { v8f a = vbroadcast(r##i[j]); \
                       acc##i##0 = vfma(a, b0, acc##i##0); if (nb == 2) acc##i##1 = vfma(a, b1, acc##i##1); }

/* acc += rows[r][0..len) x wp[0..len)[16] for the first R rows (R a constant, 1 to 6). */
#define RR_KLOOP_R(len, R) \
    for (int j = 0; j < (len); j++) { \
        v8f b0 = nb == RR_NB_WIDE ? vbroadcast(0.0f) : vload(wp), b1 = nb == 2 ? vload(wp + 8) : b0; \
        RR_WIDE_LOAD \
        wp += RR_NR; \
        RR_ROW_FMA(0) \
        if ((R) > 1) { RR_ROW_FMA(1) } \
        if ((R) > 2) { RR_ROW_FMA(2) } \
        if ((R) > 3) { RR_ROW_FMA(3) } \
        if ((R) > 4) { RR_ROW_FMA(4) } \
        if ((R) > 5) { RR_ROW_FMA(5) } \
    }

/* The inner product step of a tile of m pixels: a short tile (calls share their pixels evenly
 * between tiles of up to 6) skips the rows it would only repeat. Each row's own FMA sequence is
 * the same either way, so results do not change. */
#define RR_KLOOP(len) \
    switch (m) { \
    case 1: RR_KLOOP_R(len, 1) break; \
    case 2: RR_KLOOP_R(len, 2) break; \
    case 3: RR_KLOOP_R(len, 3) break; \
    case 4: RR_KLOOP_R(len, 4) break; \
    case 5: RR_KLOOP_R(len, 5) break; \
    default: RR_KLOOP_R(len, 6) break; \
    }

/* Row-wise K loop applies when a kernel row's taps are contiguous in memory: one group,
 * undilated columns, an unsliced input. It visits the same (ky, kx, ci) order as the per-tap
 * loop, with zeros for padding, so it is an equivalent (faster) instruction sequence. */
static inline int rr_conv_rowwise(const rr_conv_t *c) {
    return !c->transposed && c->groups == 1 && c->dw == 1 && c->ldx == c->cin && c->kw > 1
        && c->kw * c->cin <= RR_ROWWISE_MAX;
}

/* A tile's output coordinates; rows past m repeat the last pixel (computed, not stored).
 * Returns whether the tile is a run of MR neighbours within one output row. */
static inline __attribute__((always_inline)) int rr_tile_coords(
        const rr_conv_t *c, const int32_t *pix, int m, int *oy, int *ox, const int MR) {
    if (m == MR && pix[MR - 1] - pix[0] == MR - 1 && pix[0] % c->OW + MR <= c->OW) {
        /* most tiles of a dense frame: one division */
        const int y = pix[0] / c->OW, x = pix[0] % c->OW;
        for (int r = 0; r < MR; r++) { oy[r] = y; ox[r] = x + r; }
        return 1;
    }
    for (int r = 0; r < MR; r++) {
        const int p = pix[r < m ? r : m - 1];
        oy[r] = p / c->OW; ox[r] = p % c->OW;
    }
    return 0;
}

/* The row-wise K loop's input rows for kernel row ky: the image row where the window lies
 * inside it, the zero row above or below it, and a copy with zeros where the window crosses the
 * left or right edge. run: the tile is a run within one output row (rr_tile_coords says). */
static inline __attribute__((always_inline)) void rr_rowwise_rows(
        const rr_conv_t *c, const int *oy, const int *ox, int run, int ky, const float **rows,
        float (*edge)[RR_ROWWISE_MAX], const int MR) {
    const int cin = c->cin;
    if (run) {
        /* a run within one row: one image row (or none) for all, whole windows but at the edges */
        const int iy = oy[0] * c->sh - c->pt + ky * c->dh, ix0 = ox[0] * c->sw - c->pl;
        if (iy < 0 || iy >= c->H) {
            for (int r = 0; r < MR; r++) rows[r] = c->zeros;
            return;
        }
        if (ix0 >= 0 && ix0 + (MR - 1) * c->sw + c->kw <= c->W) {
            const float *base = c->x + ((size_t)iy * c->W + ix0) * cin;
            for (int r = 0; r < MR; r++) rows[r] = base + (size_t)r * c->sw * cin;
            return;
        }
    }
    for (int r = 0; r < MR; r++) {
        const int iy = oy[r] * c->sh - c->pt + ky * c->dh, ix0 = ox[r] * c->sw - c->pl;
        if (iy < 0 || iy >= c->H) {
            rows[r] = c->zeros;
        } else if (ix0 >= 0 && ix0 + c->kw <= c->W) {
            rows[r] = c->x + ((size_t)iy * c->W + ix0) * cin;
        } else {
            /* taps [ka, kb) lie in the image, contiguous there (rowwise needs ldx == cin) */
            const int ka = ix0 < 0 ? (-ix0 < c->kw ? -ix0 : c->kw) : 0;
            int kb = c->W - ix0 < c->kw ? c->W - ix0 : c->kw;
            if (kb < ka) kb = ka;
            memset(edge[r], 0, (size_t)ka * cin * sizeof(float));
            memcpy(edge[r] + (size_t)ka * cin, c->x + ((size_t)iy * c->W + ix0 + ka) * cin,
                   (size_t)(kb - ka) * cin * sizeof(float));
            memset(edge[r] + (size_t)kb * cin, 0, (size_t)(c->kw - kb) * cin * sizeof(float));
            rows[r] = edge[r];
        }
    }
}

/* A tile's epilogue: bias, activation (act a constant where the caller dispatched it), tracked
 * stores of the m pixels' 16 (or fewer) channels of block gb. */
static inline __attribute__((always_inline)) void rr_tile_store(
        const rr_conv_t *c, const v8f (*accs)[2], const int32_t *pix, int m, int gb, uint8_t *mask,
        float thr, const int act) {
    const int g = gb / c->nocb, blk = gb % c->nocb;
    const int oc0 = g * c->cout + blk * RR_NR;
    int nc = c->cout - blk * RR_NR;
    if (nc > RR_NR) nc = RR_NR;
    const float *bias = c->bias + (size_t)gb * RR_NR;
    const float *slope = c->slope ? c->slope + (size_t)gb * RR_NR : NULL;
    const v8f s0 = slope ? vload(slope) : vbroadcast(0.0f), s1 = slope ? vload(slope + 8) : s0;
    const v8f b0 = vload(bias), b1 = vload(bias + 8);
    const float *ps = c->post_scale ? c->post_scale + (size_t)gb * RR_NR : NULL;
    const v8f ps0 = ps ? vload(ps) : b0, ps1 = ps ? vload(ps + 8) : b0;
    const v8f pb0 = ps ? vload(c->post_shift + (size_t)gb * RR_NR) : b0;
    const v8f pb1 = ps ? vload(c->post_shift + (size_t)gb * RR_NR + 8) : b0;
    /* read once: a vector store may alias c, so the loop would read them again per pixel */
    float *const y = c->y + oc0;
    const size_t ldy = c->ldy;
    const float alpha = c->alpha, beta = c->beta;
    const float *const res = c->res ? c->res + oc0 : NULL;
    const size_t ldr = c->ldr;
    const int res_first = c->res_first, res_after = c->res_after_act;
    for (int r = 0; r < m; r++) {
        v8f v0 = accs[r][0] + b0, v1 = accs[r][1] + b1;
        v8f r0 = b0, r1 = b1;
        if (res) {
            const float *rp = res + (size_t)pix[r] * ldr;
            float part[RR_NR] = {0};
            if (nc < RR_NR) {
                memcpy(part, rp, (size_t)nc * sizeof(float));
                rp = part;
            }
            r0 = vload(rp);
            r1 = vload(rp + 8);
        }
        /* the Add's one rounding, its operands in its order */
#define RR_ADD_RESIDUAL { v0 = res_first ? r0 + v0 : v0 + r0; v1 = res_first ? r1 + v1 : v1 + r1; }
        if (res && !res_after) RR_ADD_RESIDUAL
        if (act != ACT_NONE) {
            v0 = vact(act, v0, alpha, beta, s0);
            v1 = vact(act, v1, alpha, beta, s1);
        }
        if (res && res_after) RR_ADD_RESIDUAL
#undef RR_ADD_RESIDUAL
        if (ps) {
            v0 = v0 * ps0 + pb0;
            v1 = v1 * ps1 + pb1;
        }
        const int p = pix[r];
        float *dst = y + (size_t)p * ldy;
        int changed;
        if (nc == RR_NR) {
            changed = rr_store8_tracked(dst, v0, thr) | rr_store8_tracked(dst + 8, v1, thr);
        } else {
            float tmp[RR_NR];
            vstore(tmp, v0);
            vstore(tmp + 8, v1);
            changed = rr_store_tracked(dst, tmp, nc, thr);
        }
        if (changed && mask) mask[p] = 1;
    }
}

/* One tile: pixels pix[0..m), global channel block gb (= group * nocb + block); nb 8-lane
 * halves of the block (1 when at most 8 output channels remain), or RR_NB_WIDE: blocks gb to
 * gb + nbw - 1 in 16-lane registers.
 * taps[0..ntaps) lists the kernel taps (ky * kw + kx) to visit, in increasing order. */
static inline __attribute__((always_inline)) void rr_conv_tile_nb(
        const rr_conv_t *c, const int32_t *pix, int m, int gb, const int32_t *taps, int ntaps,
        uint8_t *mask, float thr, const int nb, const int nbw) {
    int oy[RR_MR], ox[RR_MR];
    const int g = gb / c->nocb, cin = c->cin;
    v8f acc00 = {0}, acc01 = {0}, acc10 = {0}, acc11 = {0}, acc20 = {0}, acc21 = {0};
    v8f acc30 = {0}, acc31 = {0}, acc40 = {0}, acc41 = {0}, acc50 = {0}, acc51 = {0};
    const size_t bstride = (size_t)c->kh * c->kw * cin * RR_NR;  /* from one block's weights to the next */
#if defined(__AVX512F__)
    __m512 z[RR_MR][RR_MAX_WIDE];
    if (nb == RR_NB_WIDE)
        for (int r = 0; r < RR_MR; r++)
            for (int b = 0; b < nbw; b++) z[r][b] = _mm512_setzero_ps();
#endif
    (void)bstride;  /* read by the 16-lane loads only */
    const float *wbase = c->w + (size_t)gb * bstride;
    if (c->pointwise) {
        /* no coordinates, no bounds: a plain GEMM row per pixel (same K order as the tap loop) */
        const float *rows[RR_MR];
        for (int r = 0; r < RR_MR; r++)
            rows[r] = c->x + (size_t)pix[r < m ? r : m - 1] * c->ldx + (size_t)g * cin;
        const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
        const float *wp = wbase;
        RR_KLOOP(cin)
        goto epilogue;
    }
    const int run = rr_tile_coords(c, pix, m, oy, ox, RR_MR);
    if (rr_conv_rowwise(c)) {
        const int len = c->kw * cin;
        float edge[RR_MR][RR_ROWWISE_MAX];
        const float *wp = wbase;
        for (int ky = 0; ky < c->kh; ky++) {
            const float *rows[RR_MR];
            rr_rowwise_rows(c, oy, ox, run, ky, rows, edge, RR_MR);
            const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
            RR_KLOOP(len)
        }
    } else {
        for (int ti = 0; ti < ntaps; ti++) {
            const int t = taps[ti], ky = t / c->kw, kx = t % c->kw;
            const float *rows[RR_MR];
            for (int r = 0; r < RR_MR; r++) {
                const float *row = rr_conv_row(c, oy[r], ox[r], ky, kx);
                rows[r] = row == c->zeros ? row : row + (size_t)g * cin;
            }
            const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
            const float *wp = wbase + (size_t)t * cin * RR_NR;
            RR_KLOOP(cin)
        }
    }
epilogue:;
    /* untracked stores (dense runs) get their own copy, free of the per-store checks */
#define RR_TILE_STORE(A) { if (thr < 0.0f && !mask && m == RR_MR) rr_tile_store(c, accs, pix, RR_MR, gbx, NULL, -1.0f, A); \
                           else rr_tile_store(c, accs, pix, m, gbx, mask, thr, A); }
#if defined(__AVX512F__)
    if (nb == RR_NB_WIDE) {
        for (int b = 0; b < nbw; b++) {
            v8f accs[RR_MR][2];
            for (int r = 0; r < RR_MR; r++) {
                accs[r][0] = (v8f)_mm512_castps512_ps256(z[r][b]);
                accs[r][1] = (v8f)_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z[r][b]), 1));
            }
            const int gbx = gb + b;
            switch (c->act) { RR_ACT_CASES(RR_TILE_STORE) default: RR_TILE_STORE(c->act); }
        }
        return;
    }
#endif
    const v8f accs[RR_MR][2] = {{acc00, acc01}, {acc10, acc11}, {acc20, acc21},
                                {acc30, acc31}, {acc40, acc41}, {acc50, acc51}};
    const int gbx = gb;
    switch (c->act) { RR_ACT_CASES(RR_TILE_STORE) default: RR_TILE_STORE(c->act); }
#undef RR_TILE_STORE
}

/* rr_conv_tile_narrow's epilogue: both partial sums, bias, activation (act a constant where
 * the caller dispatched it), tracked stores of the m pixels' cout (<= 8) channels. */
static inline __attribute__((always_inline)) void rr_narrow_store(
        const rr_conv_t *c, const v8f *a0, const v8f *a1, const int32_t *pix, int m, uint8_t *mask,
        float thr, const int act) {
    const int nc = c->cout;
    const v8f bias = vload(c->bias), slope = c->slope ? vload(c->slope) : vbroadcast(0.0f);
    const int post = c->post_scale != NULL;
    const v8f ps = post ? vload(c->post_scale) : bias, pb = post ? vload(c->post_shift) : bias;
    float *const y = c->y;
    const size_t ldy = c->ldy;
    const float alpha = c->alpha, beta = c->beta;
    for (int r = 0; r < m; r++) {
        v8f v = (a0[r] + a1[r]) + bias;
        if (act != ACT_NONE) v = vact(act, v, alpha, beta, slope);
        if (post) v = v * ps + pb;
        const int p = pix[r];
        float *dst = y + (size_t)p * ldy;
        int changed;
        if (nc == 8) {
            changed = rr_store8_tracked(dst, v, thr);
        } else {
            float tmp[8];
            vstore(tmp, v);
            changed = rr_store_tracked(dst, tmp, nc, thr);
        }
        if (changed && mask) mask[p] = 1;
    }
}

/* Narrow convs (at most 8 output channels, one group): with one 8-lane block per pixel, a
 * 7-pixel tile has too few independent FMA chains to hide the FMA latency, so each pixel keeps
 * two partial sums, over the even and the odd steps of each K run, added at the end. The order
 * is fixed per layer (every pixel of a narrow conv goes through here), so results still do not
 * depend on the region. */
static inline void rr_conv_tile_narrow(const rr_conv_t *c, const int32_t *pix, int m,
                                       const int32_t *taps, int ntaps, uint8_t *mask, float thr) {
    enum { MR = RR_MR_NARROW };
    const int cin = c->cin;
    const float *rows[MR];
    v8f a0[MR], a1[MR];
    for (int r = 0; r < MR; r++) a0[r] = a1[r] = vbroadcast(0.0f);
    const float *wp = c->w;
#define RR_NARROW_K(len) { \
    const int len_ = (len); int j = 0; \
    for (; j + 2 <= len_; j += 2) { \
        const v8f b0 = vload(wp), b1 = vload(wp + RR_NR); wp += 2 * RR_NR; \
        for (int r = 0; r < MR; r++) { \
            a0[r] = vfma(vbroadcast(rows[r][j]), b0, a0[r]); \
            a1[r] = vfma(vbroadcast(rows[r][j + 1]), b1, a1[r]); \
        } \
    } \
    if (j < len_) { \
        const v8f b0 = vload(wp); wp += RR_NR; \
        for (int r = 0; r < MR; r++) a0[r] = vfma(vbroadcast(rows[r][j]), b0, a0[r]); \
    } }
    if (c->pointwise) {
        for (int r = 0; r < MR; r++) rows[r] = c->x + (size_t)pix[r < m ? r : m - 1] * c->ldx;
        RR_NARROW_K(cin)
    } else {
        int oy[MR], ox[MR];
        const int run = rr_tile_coords(c, pix, m, oy, ox, MR);
        if (rr_conv_rowwise(c)) {
            const int len = c->kw * cin;
            float edge[MR][RR_ROWWISE_MAX];
            for (int ky = 0; ky < c->kh; ky++) {
                rr_rowwise_rows(c, oy, ox, run, ky, rows, edge, MR);
                RR_NARROW_K(len)
            }
        } else {
            for (int ti = 0; ti < ntaps; ti++) {
                const int t = taps[ti], ky = t / c->kw, kx = t % c->kw;
                for (int r = 0; r < MR; r++) rows[r] = rr_conv_row(c, oy[r], ox[r], ky, kx);
                wp = c->w + (size_t)t * cin * RR_NR;
                RR_NARROW_K(cin)
            }
        }
    }
#undef RR_NARROW_K
    /* the activation a constant and, for untracked stores, no checks per store (as rr_tile_store) */
#define RR_NARROW_STORE(A) { if (thr < 0.0f && !mask) rr_narrow_store(c, a0, a1, pix, m, NULL, -1.0f, A); \
                             else rr_narrow_store(c, a0, a1, pix, m, mask, thr, A); }
    switch (c->act) { RR_ACT_CASES(RR_NARROW_STORE) default: RR_NARROW_STORE(c->act); }
#undef RR_NARROW_STORE
}

/* One output channel, one group (heads: a mask, a score map). A tile kernel would fill one of
 * its sixteen lanes, so instead each pixel is a dot product: its taps' input rows are read eight
 * channels at a time against the weights packed as [tap][cin rounded up to 8] (w1), and eight
 * pixels' lanes are summed at once in a fixed tree (vhsum8). A pixel's sum does not depend on its
 * neighbours, and every pixel of such a layer comes here, so each output's order is the same in
 * every region. */
static inline void rr_conv1_pixels(const rr_conv_t *c, const int32_t *pix, int n, const int32_t *taps,
                                   int ntaps, uint8_t *mask, float thr) {
    const int cin = c->cin, cfull = cin & ~7, tail = cin - cfull, cpad = (cin + 7) & ~7;
    const v8i tmask = vmask_n(tail);
    const v8f zero = vbroadcast(0.0f);
    const v8f bias = vbroadcast(c->bias[0]), slope = vbroadcast(c->slope ? c->slope[0] : 0.0f);
    /* the geometry in locals: read through c, the compiler reloads it (and divides) every tap */
    const float *x = c->x;
    const int H = c->H, W = c->W, ldx = c->ldx, kh = c->kh, kw = c->kw, sh = c->sh, sw = c->sw;
    const int pt = c->pt, pl = c->pl, dh = c->dh, dw = c->dw, OW = c->OW;
    for (int i = 0; i < n; i += 8) {
        const int m = n - i < 8 ? n - i : 8;
        int p[8], oy[8], ox[8];
        for (int r = 0; r < 8; r++) p[r] = pix[i + (r < m ? r : m - 1)];
        if (!c->pointwise)  /* a division per pixel costs as much as its taps: step along rows
                               (by one, or by the stride of a transposed conv's phase) */
            for (int r = 0; r < 8; r++) {
                const int d = r > 0 ? p[r] - p[r - 1] : -1;
                if (d >= 0 && ox[r - 1] + d < OW) {
                    oy[r] = oy[r - 1]; ox[r] = ox[r - 1] + d;
                } else {
                    oy[r] = p[r] / OW; ox[r] = p[r] % OW;
                }
            }
        /* all eight windows inside the image: each tap's row is a fixed offset from the window's corner */
        int inside = !c->pointwise && !c->transposed;
        const float *base[8];
        for (int r = 0; r < 8 && inside; r++) {
            const int iy0 = oy[r] * sh - pt, ix0 = ox[r] * sw - pl;
            inside = iy0 >= 0 && iy0 + (kh - 1) * dh < H && ix0 >= 0 && ix0 + (kw - 1) * dw < W;
            base[r] = x + ((size_t)(inside ? iy0 : 0) * W + (inside ? ix0 : 0)) * ldx;
        }
        v8f acc[8] = {zero, zero, zero, zero, zero, zero, zero, zero};
        for (int ti = 0; ti < ntaps; ti++) {
            const int t = taps[ti], ky = t / kw, kx = t % kw;
            const float *rows[8];
            if (c->pointwise) {
                for (int r = 0; r < 8; r++) rows[r] = x + (size_t)p[r] * ldx;
            } else if (c->transposed) {
                for (int r = 0; r < 8; r++) rows[r] = rr_conv_row(c, oy[r], ox[r], ky, kx);
            } else if (inside) {
                const long off = ((long)ky * dh * W + (long)kx * dw) * ldx;
                for (int r = 0; r < 8; r++) rows[r] = base[r] + off;
            } else {
                for (int r = 0; r < 8; r++) {
                    const int iy = oy[r] * sh - pt + ky * dh, ix = ox[r] * sw - pl + kx * dw;
                    rows[r] = iy < 0 || iy >= H || ix < 0 || ix >= W ? c->zeros : x + ((size_t)iy * W + ix) * ldx;
                }
            }
            const float *wt = c->w1 + (size_t)t * cpad;
            for (int k0 = 0; k0 < cfull; k0 += 8) {
                const v8f w = vload(wt + k0);
                for (int r = 0; r < 8; r++) acc[r] = vfma(vload(rows[r] + k0), w, acc[r]);
            }
            if (tail) {
                const v8f w = vload(wt + cfull);
                for (int r = 0; r < 8; r++) acc[r] = vfma(vload_mask(rows[r] + cfull, tmask), w, acc[r]);
            }
        }
        v8f v = vhsum8(acc) + bias;
        if (c->act != ACT_NONE) v = vact(c->act, v, c->alpha, c->beta, slope);
        if (c->post_scale) v = v * vbroadcast(c->post_scale[0]) + vbroadcast(c->post_shift[0]);
        float out[8];
        vstore(out, v);
        for (int r = 0; r < m; r++)
            if (rr_store_tracked(c->y + (size_t)p[r] * c->ldy, out + r, 1, thr) && mask) mask[p[r]] = 1;
    }
}

/* Transposed convs whose kernel equals their stride (no padding, dilation or output padding:
 * the 2x2 stride-2 upsamplers of U-Net and DBNet decoders) with 1, 2 or 4 output channels. Each
 * output pixel reads one input pixel through one tap, so the general kernels spend their time
 * finding rows for a few MACs. Here a vector holds 8 / cout consecutive output pixels of a row,
 * cout channels each (pixel-major): every lane gathers its own pixel's input channel ci and
 * adds input channels in order from zero, then bias and activation, so a value never depends on
 * which pixels share its vector. Runs of consecutive pixels go eight lanes at a time; a short
 * vector repeats its last pixel in the unused lanes and stores only its own. */
typedef struct {  /* the lane tables; geometry, buffers and activation stay in rr_conv_t */
    const int32_t *xoff;                /* [sw][8]: lane's input offset from pixel ox / sw, by ox % sw */
    const float *wl;                    /* [sh][sw][cin][8]: lane weights by tap row, ox % sw, ci */
    const float *bl, *sl;               /* [8]: lane bias, lane PRelu slope (or NULL) */
} rr_shuffle_t;

/* Output pixels [ox0, ox0 + n) of row oy (the stride, c->sh x c->sw, is the kernel). */
static inline void rr_shuffle_run(const rr_conv_t *c, const rr_shuffle_t *t, int oy, int ox0, int n,
                                  uint8_t *mask, float thr) {
    const int cout = c->cout, P = 8 / cout, cin = c->cin, sw = c->sw;
    const int iy = oy / c->sh, ky = oy - iy * c->sh;
    const float *xrow = c->x + (size_t)iy * c->W * c->ldx;
    const v8f bias = vload(t->bl), slope = t->sl ? vload(t->sl) : vbroadcast(0.0f);
    for (int i = 0; i < n; i += P) {
        const int ox = ox0 + i, m = n - i < P ? n - i : P;
        const int ix = ox / sw, ph = ox - ix * sw;
        const float *xp = xrow + (size_t)ix * c->ldx;
        const int32_t *idx = t->xoff + ph * 8;
        int32_t part[8];
        if (m < P) {  /* lanes past the run read the run's last pixel */
            for (int l = 0; l < 8; l++) part[l] = idx[(l / cout < m ? l / cout : m - 1) * cout];
            idx = part;
        }
        const float *wp = t->wl + (size_t)(ky * sw + ph) * cin * 8;
        v8f acc = vbroadcast(0.0f);
#if defined(__AVX__)
        if (cout == 4) {  /* two pixels: a broadcast per half beats a gather */
            const float *x0 = xp + idx[0], *x1 = xp + idx[4];
            for (int ci = 0; ci < cin; ci++)
                acc = vfma((v8f)_mm256_set_m128(_mm_broadcast_ss(x1 + ci), _mm_broadcast_ss(x0 + ci)),
                           vload(wp + ci * 8), acc);
        } else if (cout == 1 && sw == 2 && ph == 0 && m == 8 && (cin & 3) == 0) {
            /* eight pixels from four input pixels, two lanes each: four channels of each input
               pixel in one load, spread by shuffles instead of four gathers */
            const size_t ld = (size_t)c->ldx;
            for (int c0 = 0; c0 < cin; c0 += 4) {
                const __m256 a02 = _mm256_set_m128(_mm_loadu_ps(xp + 2 * ld + c0), _mm_loadu_ps(xp + c0));
                const __m256 a13 = _mm256_set_m128(_mm_loadu_ps(xp + 3 * ld + c0), _mm_loadu_ps(xp + ld + c0));
                const float *w = wp + c0 * 8;
                acc = vfma((v8f)_mm256_shuffle_ps(a02, a13, 0x00), vload(w), acc);
                acc = vfma((v8f)_mm256_shuffle_ps(a02, a13, 0x55), vload(w + 8), acc);
                acc = vfma((v8f)_mm256_shuffle_ps(a02, a13, 0xaa), vload(w + 16), acc);
                acc = vfma((v8f)_mm256_shuffle_ps(a02, a13, 0xff), vload(w + 24), acc);
            }
        } else
#endif
        for (int ci = 0; ci < cin; ci++) acc = vfma(rr_gather(xp + ci, idx), vload(wp + ci * 8), acc);
        v8f v = acc + bias;
        if (c->act != ACT_NONE) v = vact(c->act, v, c->alpha, c->beta, slope);
        const size_t p0 = (size_t)oy * c->OW + ox;
        if (m == P && c->ldy == cout) {  /* the pixels' channels lie contiguous: one store */
            const int bits = rr_store8_lanes(c->y + p0 * cout, v, thr);
            if (bits && mask)
                for (int j = 0; j < P; j++)
                    if ((bits >> (j * cout)) & ((1 << cout) - 1)) mask[p0 + j] = 1;
            continue;
        }
        float out[8];
        vstore(out, v);
        for (int j = 0; j < m; j++)
            if (rr_store_tracked(c->y + (p0 + j) * c->ldy, out + j * cout, cout, thr) && mask) mask[p0 + j] = 1;
    }
}

/* Pixels pix[0..n) (any order): each run of consecutive pixels in one row in one call. */
static inline void rr_shuffle_pixels(const rr_conv_t *c, const rr_shuffle_t *t, const int32_t *pix, int n,
                                     uint8_t *mask, float thr) {
    for (int i = 0; i < n;) {
        const int p = pix[i], oy = p / c->OW, ox = p - oy * c->OW;
        int k = 1;
        while (i + k < n && pix[i + k] == p + k && ox + k < c->OW) k++;
        rr_shuffle_run(c, t, oy, ox, k, mask, thr);
        i += k;
    }
}

/* Blocks per work item: RR_MAX_WIDE with AVX-512 (unless turned off), else 1. */
static inline int rr_conv_blocks_per_item(void) {
#if defined(__AVX512F__)
    return rr_wide_tiles() ? RR_MAX_WIDE : 1;
#else
    return 1;
#endif
}

#if defined(__AVX512F__)
/* nbw (1 to RR_MAX_WIDE) 16-channel blocks from gb in 16-lane registers. Kept out of line, apart
 * from the 8-lane tiles: inlined together they made GCC allocate the 8-lane loop's registers
 * worse (ResNet-like convs fell from 140-170 to 45 GMAC/s on that path). */
static __attribute__((noinline)) void rr_conv_tile_wide(
        const rr_conv_t *c, const int32_t *pix, int m, int gb, int nbw, const int32_t *taps, int ntaps,
        uint8_t *mask, float thr) {
    switch (nbw) {
    case 1: rr_conv_tile_nb(c, pix, m, gb, taps, ntaps, mask, thr, RR_NB_WIDE, 1); break;
    case 2: rr_conv_tile_nb(c, pix, m, gb, taps, ntaps, mask, thr, RR_NB_WIDE, 2); break;
    case 3: rr_conv_tile_nb(c, pix, m, gb, taps, ntaps, mask, thr, RR_NB_WIDE, 3); break;
    default: rr_conv_tile_nb(c, pix, m, gb, taps, ntaps, mask, thr, RR_NB_WIDE, 4); break;
    }
}
#endif

/* One tile of pixels times blocks gb .. gb + count - 1 of one group (count up to
 * rr_conv_blocks_per_item()). nb and nbw are constants in each call: the K loop keeps no branch. */
static inline void rr_conv_tile(const rr_conv_t *c, const int32_t *pix, int m, int gb, int count,
                                const int32_t *taps, int ntaps, uint8_t *mask, float thr) {
    /* a group's last block may hold 8 channels or fewer: its own 8-lane call */
    const int last_narrow = c->cout - ((gb + count - 1) % c->nocb) * RR_NR <= 8;
    const int wide = count - last_narrow;
#if defined(__AVX512F__)
    if (wide > 0 && rr_wide_tiles())
        rr_conv_tile_wide(c, pix, m, gb, wide, taps, ntaps, mask, thr);
    else
#endif
    for (int b = 0; b < wide; b++)
        rr_conv_tile_nb(c, pix, m, gb + b, taps, ntaps, mask, thr, 2, 0);
    if (last_narrow)
        rr_conv_tile_nb(c, pix, m, gb + count - 1, taps, ntaps, mask, thr, 1, 0);
}

/* Depthwise (one input channel per group, one output per group). */
typedef struct {
    const float *x; int H, W, ldx;
    float *y; int OH, OW, ldy;
    int kh, kw, sh, sw, pt, pl, dh, dw;
    int C;                              /* channels */
    const float *w;                     /* packed [kh*kw][Cpad], Cpad = C rounded up to 8 */
    const float *bias;                  /* [Cpad] */
    const float *slope;                 /* [Cpad] or NULL */
    int act; float alpha, beta;
    const float *post_scale, *post_shift;  /* [Cpad]: affine after the activation, or NULL */
} rr_dw_t;

/* One output pixel, all channels. Out-of-image taps are skipped; that depends only on the
 * pixel's position, so the order stays fixed per element. */
/* 8 channels of output pixel p (biased): activation, tracked store at dst, change mark. Callers
 * in hot loops pass c's fields read once: after a store through a vector pointer (which may
 * alias anything) the compiler would read them again for every pixel. */
static inline __attribute__((always_inline)) void rr_dw_store(
        float *dst, v8f v, v8f slope, float alpha, float beta, const float *ps, const float *pb, int p,
        uint8_t *mask, float thr, const int act) {
    if (act != ACT_NONE) v = vact(act, v, alpha, beta, slope);
    if (ps) v = v * vload(ps) + vload(pb);
    if (rr_store8_tracked(dst, v, thr) && mask) mask[p] = 1;
}

/* nb (1..4, a constant after inlining) whole 8-channel blocks of depthwise output pixel p */
static inline __attribute__((always_inline)) void rr_dw_blocks(
        const rr_dw_t *c, const float *const *rows, const int *tapidx, int nrows, int cpad, int c0,
        const int nb, int p, uint8_t *mask, float thr) {
    const v8f zero = vbroadcast(0.0f);
    v8f a[4] = {zero, zero, zero, zero};
    for (int k = 0; k < nrows; k++) {
        const float *xr = rows[k] + c0, *wr = c->w + (size_t)tapidx[k] * cpad + c0;
        for (int b = 0; b < nb; b++)
            a[b] = vfma(vload(xr + 8 * b), vload(wr + 8 * b), a[b]);
    }
    for (int b = 0; b < nb; b++) {
        const int cb = c0 + 8 * b;
        rr_dw_store(c->y + (size_t)p * c->ldy + cb, a[b] + vload(c->bias + cb),
                    c->slope ? vload(c->slope + cb) : zero, c->alpha, c->beta,
                    c->post_scale ? c->post_scale + cb : NULL, c->post_shift ? c->post_shift + cb : NULL, p,
                    mask, thr, c->act);
    }
}

static inline void rr_dw_pixel(const rr_dw_t *c, int p, uint8_t *mask, float thr) {
    const int oy = p / c->OW, ox = p % c->OW, C = c->C;
    const int cpad = (C + 7) & ~7;
    const float *rows[64];
    int nrows = 0, tapidx[64];
    /* taps in order, row by row, without a division per tap */
    const int iy0 = oy * c->sh - c->pt, ix0 = ox * c->sw - c->pl;
    for (int ky = 0, t = 0; ky < c->kh && t < 64; ky++) {
        const int iy = iy0 + ky * c->dh;
        if (iy < 0 || iy >= c->H) {
            t += c->kw;
            continue;
        }
        const float *row = c->x + (size_t)iy * c->W * c->ldx;
        for (int kx = 0; kx < c->kw && t < 64; kx++, t++) {
            const int ix = ix0 + kx * c->dw;
            if (ix < 0 || ix >= c->W) continue;
            rows[nrows] = row + (size_t)ix * c->ldx;
            tapidx[nrows++] = t;
        }
    }
    int c0 = 0;
    const int cfull = C & ~7;
    /* whole 8-channel blocks, up to four at a time with independent accumulators (hides the FMA
       latency); each lane still adds the taps in the same order */
    for (; c0 + 32 <= cfull; c0 += 32)
        rr_dw_blocks(c, rows, tapidx, nrows, cpad, c0, 4, p, mask, thr);
    switch ((cfull - c0) / 8) {
    case 3: rr_dw_blocks(c, rows, tapidx, nrows, cpad, c0, 3, p, mask, thr); break;
    case 2: rr_dw_blocks(c, rows, tapidx, nrows, cpad, c0, 2, p, mask, thr); break;
    case 1: rr_dw_blocks(c, rows, tapidx, nrows, cpad, c0, 1, p, mask, thr); break;
    default: break;
    }
    if (cfull == C)
        return;
    /* the last C % 8 channels, read through a zero-padded copy */
    v8f acc = vbroadcast(0.0f);
    for (int k = 0; k < nrows; k++) {
        float part[8] = {0};
        memcpy(part, rows[k] + cfull, (size_t)(C - cfull) * sizeof(float));
        acc = vfma(vload(part), vload(c->w + (size_t)tapidx[k] * cpad + cfull), acc);
    }
    v8f v = acc + vload(c->bias + cfull);
    if (c->act != ACT_NONE)
        v = vact(c->act, v, c->alpha, c->beta, c->slope ? vload(c->slope + cfull) : vbroadcast(0.0f));
    if (c->post_scale) v = v * vload(c->post_scale + cfull) + vload(c->post_shift + cfull);
    float out[8];
    vstore(out, v);
    if (rr_store_tracked(c->y + (size_t)p * c->ldy + cfull, out, C - cfull, thr) && mask) mask[p] = 1;
}

/* np (1 or 4) interior output pixels from ox of row oy times nb (1 or 2) 8-channel blocks from
 * cb: np x nb independent sums hide the FMA latency, and the pixels share each weight load. */
static inline __attribute__((always_inline)) void rr_dw_group(
        const rr_dw_t *c, int oy, int ox, int cb, const long *toff, int nt, int cpad, uint8_t *mask,
        float thr, const int act, const int np, const int nb) {
    const long step = (long)c->sw * c->ldx;
    const float *base = c->x + ((size_t)(oy * c->sh - c->pt) * c->W + (size_t)(ox * c->sw - c->pl)) * c->ldx + cb;
    v8f acc[4][2];
    for (int q = 0; q < np; q++)
        for (int j = 0; j < nb; j++) acc[q][j] = vbroadcast(0.0f);
    for (int t = 0; t < nt; t++) {
        const float *wt = c->w + (size_t)t * cpad + cb;
        for (int j = 0; j < nb; j++) {
            const v8f w = vload(wt + 8 * j);
            for (int q = 0; q < np; q++)
                acc[q][j] = vfma(vload(base + toff[t] + q * step + 8 * j), w, acc[q][j]);
        }
    }
    const int p0 = oy * c->OW + ox;
    const long ldy = c->ldy;
    float *const y0 = c->y + p0 * ldy + cb;
    const float alpha = c->alpha, beta = c->beta;
    const float *ps = c->post_scale, *pb = c->post_shift;
    for (int j = 0; j < nb; j++) {
        const int cj = cb + 8 * j;
        const v8f bias = vload(c->bias + cj), slope = c->slope ? vload(c->slope + cj) : vbroadcast(0.0f);
        for (int q = 0; q < np; q++)
            rr_dw_store(y0 + q * ldy + 8 * j, acc[q][j] + bias, slope, alpha, beta, ps ? ps + cj : NULL,
                        ps ? pb + cj : NULL, p0 + q, mask, thr, act);
    }
}

/* All blocks of np pixels from ox, two blocks at a time. */
static inline __attribute__((always_inline)) void rr_dw_pixels(
        const rr_dw_t *c, int oy, int ox, const long *toff, int nt, int cpad, uint8_t *mask,
        float thr, const int act, const int np) {
    int cb = 0;
    for (; cb + 16 <= c->C; cb += 16) rr_dw_group(c, oy, ox, cb, toff, nt, cpad, mask, thr, act, np, 2);
    if (cb < c->C) rr_dw_group(c, oy, ox, cb, toff, nt, cpad, mask, thr, act, np, 1);
}

/* Interior pixels ox in [a, b) of output row oy, where every tap is inside the input, so no
 * bounds are checked: four pixels at a time, each pixel's channels two blocks at a time (their
 * inputs and the weights stay in L1). A run's last four overlap the group before them rather
 * than going one by one: a pixel computed twice gets the same bits, and storing them again
 * changes nothing. Each element adds its taps in the same order, from zero, as rr_dw_pixel. */
#define RR_DW_MAXTAPS 49

/* NP pixels from ox of row oy, 8 channels from cb, for an undilated kernel KW wide at column
 * stride SW (constants after inlining). Each input vector of a kernel row is loaded once and
 * feeds every pixel whose window covers it, with that row's KW weights in registers: about a
 * third of the loads of rr_dw_group. Taps outside the image are skipped (whole kernel rows, and
 * input columns before 0 or from W on), so pixel q meets its taps in the order rr_dw_pixel gives
 * them (rows, then columns left to right, the outside ones left out): every element adds the
 * same terms in the same order, wherever it lies. */
static inline __attribute__((always_inline)) void rr_dw_slide(
        const rr_dw_t *c, int oy, int ox, int cb, int cpad, uint8_t *mask, float thr, const int act,
        const int NP, const int KW, const int SW) {
    const long ldx = c->ldx, W = c->W;
    const int NU = (NP - 1) * SW + KW, ix0 = ox * SW - c->pl, iy0 = oy * c->sh - c->pt;
    const int ulo = ix0 < 0 ? -ix0 : 0, uhi = W - ix0 < NU ? W - ix0 : NU;
    v8f acc[8];
    _Pragma("GCC unroll 8")
    for (int q = 0; q < NP; q++) acc[q] = vbroadcast(0.0f);
    for (int ky = 0; ky < c->kh; ky++) {
        const int iy = iy0 + ky * c->dh;
        if (iy < 0 || iy >= c->H) continue;
        const float *wt = c->w + (size_t)ky * KW * cpad + cb;
        v8f w[7];
        _Pragma("GCC unroll 8")
        for (int kx = 0; kx < KW; kx++) w[kx] = vload(wt + (size_t)kx * cpad);
        const float *row = c->x + ((long)iy * W + ix0) * ldx + cb;
        _Pragma("GCC unroll 32")
        for (int u = 0; u < NU; u++) {
            if (u < ulo || u >= uhi) continue;
            v8f v = vload(row + u * ldx);
            RR_KEEP_IN_REGISTER(v);
            /* pixels q with u - q * SW in [0, KW), in increasing tap order per pixel */
            _Pragma("GCC unroll 8")
            for (int q = 0; q < NP; q++) {
                const int kx = u - q * SW;
                if (kx >= 0 && kx < KW) acc[q] = vfma(v, w[kx], acc[q]);
            }
        }
    }
    const int p0 = oy * c->OW + ox;
    const long ldy = c->ldy;
    float *const y0 = c->y + p0 * ldy + cb;
    const v8f bias = vload(c->bias + cb), slope = c->slope ? vload(c->slope + cb) : vbroadcast(0.0f);
    const float alpha = c->alpha, beta = c->beta;
    const float *ps = c->post_scale ? c->post_scale + cb : NULL, *pb = c->post_shift ? c->post_shift + cb : NULL;
    _Pragma("GCC unroll 8")
    for (int q = 0; q < NP; q++)
        rr_dw_store(y0 + q * ldy, acc[q] + bias, slope, alpha, beta, ps, pb, p0 + q, mask, thr, act);
}

/* Interior pixels [a, b) of row oy through rr_dw_slide, NP at a time (the last group overlaps
 * the one before rather than going one by one). */
static inline __attribute__((always_inline)) void rr_dw_slide_run(
        const rr_dw_t *c, int oy, int a, int b, uint8_t *mask, float thr, const int act,
        const int KW, const int SW) {
    const int cpad = (c->C + 7) & ~7;
    if (b - a >= 8) {
        for (int ox = a; ox < b; ox += 8)
            for (int cb = 0; cb < c->C; cb += 8)
                rr_dw_slide(c, oy, ox > b - 8 ? b - 8 : ox, cb, cpad, mask, thr, act, 8, KW, SW);
    } else {
        for (int ox = a; ox < b; ox += 4)
            for (int cb = 0; cb < c->C; cb += 8)
                rr_dw_slide(c, oy, ox > b - 4 ? b - 4 : ox, cb, cpad, mask, thr, act, 4, KW, SW);
    }
}

/* Pixels [a, b) of row oy: interior ones (every tap inside the image) unless rr_dw_slide takes
 * the kernel, which checks the bounds itself. */
static inline __attribute__((always_inline)) void rr_dw_interior_act(
        const rr_dw_t *c, int oy, int a, int b, uint8_t *mask, float thr, const int act) {
    const int cpad = (c->C + 7) & ~7, kh = c->kh, kw = c->kw, nt = kh * kw;
    long toff[RR_DW_MAXTAPS];
    for (int ky = 0; ky < kh; ky++)
        for (int kx = 0; kx < kw; kx++)
            toff[ky * kw + kx] = ((long)ky * c->dh * c->W + (long)kx * c->dw) * c->ldx;
    if (b - a < 4) {
        for (int ox = a; ox < b; ox++) rr_dw_pixels(c, oy, ox, toff, nt, cpad, mask, thr, act, 1);
        return;
    }
    if (c->dw == 1 && (kw == 3 || kw == 5 || kw == 7) && (c->sw == 1 || c->sw == 2)) {
        if (kw == 3 && c->sw == 1) rr_dw_slide_run(c, oy, a, b, mask, thr, act, 3, 1);
        else if (kw == 3) rr_dw_slide_run(c, oy, a, b, mask, thr, act, 3, 2);
        else if (kw == 5 && c->sw == 1) rr_dw_slide_run(c, oy, a, b, mask, thr, act, 5, 1);
        else if (kw == 5) rr_dw_slide_run(c, oy, a, b, mask, thr, act, 5, 2);
        else if (c->sw == 1) rr_dw_slide_run(c, oy, a, b, mask, thr, act, 7, 1);
        else rr_dw_slide_run(c, oy, a, b, mask, thr, act, 7, 2);
        return;
    }
    for (int ox = a; ox < b; ox += 4)
        rr_dw_pixels(c, oy, ox > b - 4 ? b - 4 : ox, toff, nt, cpad, mask, thr, act, 4);
}

static inline void rr_dw_interior(const rr_dw_t *c, int oy, int a, int b, uint8_t *mask, float thr) {
#define RR_DW_INTERIOR(A) { if (thr < 0.0f && !mask) rr_dw_interior_act(c, oy, a, b, NULL, -1.0f, A); \
                             else rr_dw_interior_act(c, oy, a, b, mask, thr, A); }
    switch (c->act) { RR_ACT_CASES(RR_DW_INTERIOR) default: RR_DW_INTERIOR(c->act); }
#undef RR_DW_INTERIOR
}

/* Pixels pix[0..n) (ascending): runs of neighbours in one row take the interior path where
 * every tap is in the image, the rest rr_dw_pixel. */
static inline void rr_dw_list(const rr_dw_t *c, const int32_t *pix, int n, uint8_t *mask, float thr) {
    const int fast = c->C % 8 == 0 && c->kh * c->kw <= RR_DW_MAXTAPS;
    /* kernels rr_dw_slide takes whole rows of, borders included */
    const int slide = fast && c->dw == 1 && (c->kw == 3 || c->kw == 5 || c->kw == 7) && (c->sw == 1 || c->sw == 2);
    /* interior columns: ox*sw - pl >= 0 and ox*sw - pl + (kw-1)*dw <= W-1 */
    const int xlo = (c->pl + c->sw - 1) / c->sw;
    const int xhi_num = c->W - 1 - (c->kw - 1) * c->dw + c->pl;
    const int xhi = xhi_num < 0 ? 0 : xhi_num / c->sw + 1;
    int i = 0;
    while (i < n) {
        const int p0 = pix[i], oy = p0 / c->OW, ox0 = p0 % c->OW;
        /* the list ascends without repeats, so a run's last pixel tells whether all of it is
         * there (dense rows); otherwise walk it */
        int len = n - i < c->OW - ox0 ? n - i : c->OW - ox0;
        if (pix[i + len - 1] != p0 + len - 1) {
            len = 1;
            while (i + len < n && pix[i + len] == p0 + len && ox0 + len < c->OW) len++;
        }
        if (slide && len >= 4) {
            rr_dw_interior(c, oy, ox0, ox0 + len, mask, thr);
            i += len;
            continue;
        }
        const int iy0 = oy * c->sh - c->pt, iy1 = iy0 + (c->kh - 1) * c->dh;
        int a = ox0, b = ox0;
        if (fast && len > 1 && iy0 >= 0 && iy1 < c->H) {
            a = ox0 > xlo ? ox0 : xlo;
            b = ox0 + len < xhi ? ox0 + len : xhi;
            if (a >= b) a = b = ox0;
            else rr_dw_interior(c, oy, a, b, mask, thr);
        }
        for (int ox = ox0; ox < a; ox++) rr_dw_pixel(c, oy * c->OW + ox, mask, thr);
        for (int ox = b > ox0 ? b : ox0; ox < ox0 + len; ox++) rr_dw_pixel(c, oy * c->OW + ox, mask, thr);
        i += len;
    }
}

/* A conv split by input-channel groups (frame stacks): y = act(((P_0 + P_1) + ...) + bias),
 * P_s the group's partial conv (bias-free) kept between frames. */
static inline void rr_stack_sum_pixel(const float *partials, size_t stride, int k, int C,
                                      const float *bias, int act, float alpha, float beta,
                                      float *dst, float thr, int *changed) {
    float tmp[8];
    for (int c0 = 0; c0 < C; c0 += 8) {
        const int nc = C - c0 < 8 ? C - c0 : 8;
        v8f v;
        if (nc == 8) {
            v = vload(partials + c0);
            for (int s = 1; s < k; s++) v = v + vload(partials + s * stride + c0);
        } else {
            float part[8] = {0};
            memcpy(part, partials + c0, (size_t)nc * sizeof(float));
            v = vload(part);
            for (int s = 1; s < k; s++) {
                memcpy(part, partials + s * stride + c0, (size_t)nc * sizeof(float));
                v = v + vload(part);
            }
        }
        memset(tmp, 0, sizeof tmp);
        memcpy(tmp, bias + c0, (size_t)nc * sizeof(float));
        v = v + vload(tmp);
        if (act != ACT_NONE) v = vact(act, v, alpha, beta, vbroadcast(0.0f));
        vstore(tmp, v);
        *changed |= rr_store_tracked(dst + c0, tmp, nc, thr);
    }
}

/* A dense layer over a flattened spatial tensor (Flatten -> Gemm), split by pixel:
 * partial[p] = x[p, :] . W[p] (per-pixel weight slices, [C][npad] each), y = bias + sum_p
 * partial[p] in increasing p. A changed pixel costs its own slice; the final sum is cheap. */
/* Output columns [n0, n1) of one pixel's partial, 32 at a time (n0 a multiple of 32). */
static inline void rr_gemm_pixel_cols(const float *x, int C, const float *w, int npad, int blocked, float *out,
                                      int n0, int n1) {
    for (; n0 < n1; n0 += 32) {
        /* n0 is a block's start, n1 a block's end or npad; blocked: w holds blocks of 32 columns
         * (the last npad - n0 wide), each block's C rows one after another (pack_spatial_gemm) */
        const int wb = n1 - n0 < 32 ? n1 - n0 : 32, nb = wb / 8, ld = blocked ? wb : npad;
        v8f a0 = vbroadcast(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const float *wp = blocked ? w + (size_t)C * n0 : w + n0;
        for (int c = 0; c < C; c++, wp += ld) {
            const v8f xv = vbroadcast(x[c]);
            a0 = vfma(xv, vload(wp), a0);
            if (nb > 1) a1 = vfma(xv, vload(wp + 8), a1);
            if (nb > 2) a2 = vfma(xv, vload(wp + 16), a2);
            if (nb > 3) a3 = vfma(xv, vload(wp + 24), a3);
        }
        vstore(out + n0, a0);
        if (nb > 1) vstore(out + n0 + 8, a1);
        if (nb > 2) vstore(out + n0 + 16, a2);
        if (nb > 3) vstore(out + n0 + 24, a3);
    }
}

static inline void rr_gemm_pixel_partial(const float *x, int C, const float *w, int npad, int blocked, float *out) {
    rr_gemm_pixel_cols(x, C, w, npad, blocked, out, 0, npad);
}

static inline void rr_gemm_pixel_sum(const float *partial, int npix, int npad, const float *bias, float *y) {
    for (int n0 = 0; n0 < npad; n0 += 8) {
        v8f acc = vload(bias + n0);
        for (int p = 0; p < npix; p++) acc = acc + vload(partial + (size_t)p * npad + n0);
        vstore(y + n0, acc);
    }
}

#endif
