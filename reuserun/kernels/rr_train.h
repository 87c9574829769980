/* Backward kernels for training with reuse (reuserun.train).
 *
 * A node is an output position recomputed at some frame; it holds one value over a run of frames,
 * and its gradient is the sum over those frames. These kernels turn node gradients into weight
 * gradients and input gradients. Buffers are NHWC. Unlike the forward, gradients need no
 * bit-exactness against a dense run (only agreement up to summation order), so FMA is used freely;
 * the results are still deterministic for a given thread count.
 */
#ifndef RR_TRAIN_H
#define RR_TRAIN_H

#include "rr_simd.h"

#define RR_TMR 4   /* nodes per tile: they share each load of weights or weight gradients */

typedef struct {
    const float *x; int W, cin;      /* layer input at the current frame, (H, W, cin) */
    const float *y; int OW, cout;    /* layer output (after its ReLU, if any), (OH, OW, cout) */
    int kh, kw, sh, sw, relu;
    int ldg;                         /* cout rounded up to 8 */
    int cip;                         /* cin rounded up to 8 */
    const float *wt;                 /* [kh*kw][ldg][cip]: weights laid out for the input gradient */
    float *acc;                      /* (OH*OW, cout) upstream gradient sums; zeroed as consumed */
} rr_tconv_t;

/* Node gradients of a tile into g[RR_TMR][ldg]: acc through the ReLU mask; rows past m are zero.
 * The ReLU mask comes from the stored output (y > 0), as torch's relu backward does. */
static inline void rr_tconv_load_g(const rr_tconv_t *c, const int32_t *pix, int m, float *g) {
    for (int r = 0; r < RR_TMR; r++) {
        float *gr = g + r * c->ldg;
        for (int co = 0; co < c->ldg; co++) gr[co] = 0.0f;
        if (r >= m) continue;
        float *a = c->acc + (size_t)pix[r] * c->cout;
        const float *y = c->y + (size_t)pix[r] * c->cout;
        for (int co = 0; co < c->cout; co++) {
            gr[co] = (!c->relu || y[co] > 0.0f) ? a[co] : 0.0f;
            a[co] = 0.0f;
        }
    }
}

/* dw[tap][cin][ldg] += x(window) (x) g and db[ldg] += g for the tile's nodes. */
static inline void rr_tconv_dw(const rr_tconv_t *c, const int32_t *pix, int m, const float *g,
                               float *dw, float *db) {
    const float *xb[RR_TMR];
    for (int r = 0; r < RR_TMR; r++) {
        int p = pix[r < m ? r : 0];
        int oy = p / c->OW, ox = p % c->OW;
        xb[r] = c->x + ((size_t)(oy * c->sh) * c->W + ox * c->sw) * c->cin;
    }
    const int ld = c->ldg;
    for (int cb = 0; cb < ld; cb += 8) {
        const v8f g0 = vload(g + cb), g1 = vload(g + ld + cb);
        const v8f g2 = vload(g + 2 * ld + cb), g3 = vload(g + 3 * ld + cb);
        vstore(db + cb, vload(db + cb) + ((g0 + g1) + (g2 + g3)));
        for (int ky = 0; ky < c->kh; ky++)
            for (int kx = 0; kx < c->kw; kx++) {
                const size_t off = ((size_t)ky * c->W + kx) * c->cin;
                float *d = dw + (size_t)(ky * c->kw + kx) * c->cin * ld + cb;
                for (int ci = 0; ci < c->cin; ci++, d += ld) {
                    v8f v = vload(d);
                    v = vfma(vbroadcast(xb[0][off + ci]), g0, v);
                    v = vfma(vbroadcast(xb[1][off + ci]), g1, v);
                    v = vfma(vbroadcast(xb[2][off + ci]), g2, v);
                    v = vfma(vbroadcast(xb[3][off + ci]), g3, v);
                    vstore(d, v);
                }
            }
    }
}

/* dx[r][tap][cip] = W^T g for each node r < m of the tile: what it sends into its input window. */
static inline void rr_tconv_dx(const rr_tconv_t *c, int m, const float *g, float *dx) {
    const int taps = c->kh * c->kw, ld = c->ldg, cip = c->cip;
    for (int tap = 0; tap < taps; tap++)
        for (int cb = 0; cb < cip; cb += 16) {
            const int two = cip - cb >= 16;
            v8f a00 = vbroadcast(0.0f), a01 = a00, a10 = a00, a11 = a00;
            v8f a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            const float *w = c->wt + (size_t)tap * ld * cip + cb;
            for (int co = 0; co < c->cout; co++, w += cip) {
                const v8f w0 = vload(w), w1 = two ? vload(w + 8) : w0;
                const v8f b0 = vbroadcast(g[co]), b1 = vbroadcast(g[ld + co]);
                const v8f b2 = vbroadcast(g[2 * ld + co]), b3 = vbroadcast(g[3 * ld + co]);
                a00 = vfma(b0, w0, a00); a01 = vfma(b0, w1, a01);
                a10 = vfma(b1, w0, a10); a11 = vfma(b1, w1, a11);
                a20 = vfma(b2, w0, a20); a21 = vfma(b2, w1, a21);
                a30 = vfma(b3, w0, a30); a31 = vfma(b3, w1, a31);
            }
            v8f out[RR_TMR][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            for (int r = 0; r < m; r++) {
                float *d = dx + ((size_t)r * taps + tap) * cip + cb;
                vstore(d, out[r][0]);
                if (two) vstore(d + 8, out[r][1]);
            }
        }
}

/* The reused Linear (Flatten -> Gemm) at one node p, live over frames [t, end):
 * s = P[end] - P[t] is its summed output gradient (P: float64 prefix sums of the per-frame
 * output gradients, [T+1][npad]). Then dw_p[c][:] += y_p[c] s, and acc_p[c] += w_p[c] . s.
 * w and dw are packed [pixel][C][npad] (reuserun.kernels.conv.pack_spatial_gemm). */
static inline void rr_linear_node(const float *y, int C, const float *w, float *dw, int npad,
                                  const double *P, int t, int end, float *acc, float *s) {
    const double *pe = P + (size_t)end * npad, *pt = P + (size_t)t * npad;
    for (int a = 0; a < npad; a++) s[a] = (float)(pe[a] - pt[a]);
    for (int c = 0; c < C; c++) {
        const float *wc = w + (size_t)c * npad;
        float *dc = dw + (size_t)c * npad;
        const v8f yc = vbroadcast(y[c]);
        v8f dot = vbroadcast(0.0f);
        for (int a = 0; a < npad; a += 8) {
            const v8f sv = vload(s + a);
            dot = vfma(vload(wc + a), sv, dot);
            vstore(dc + a, vfma(yc, sv, vload(dc + a)));
        }
        acc[c] += ((dot[0] + dot[1]) + (dot[2] + dot[3])) + ((dot[4] + dot[5]) + (dot[6] + dot[7]));
    }
}

#endif
