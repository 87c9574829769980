# Kernels for training with reuse: change lists for the forward record, and the backward over
# recomputed nodes (conv weight/input gradients, the reused Linear from prefix sums).
# The forward itself runs on conv.pyx's ConvKernel and SpatialGemmKernel; the arithmetic of the
# backward lives in rr_train.h.
from cython.parallel cimport prange, threadid
from libc.math cimport sqrtf
from libc.stdint cimport int32_t, uint8_t
import numpy as np

from reuserun.kernels.common cimport fptr, rr_num_threads

cdef extern from "rr_train.h" nogil:
    enum:
        RR_TMR
    ctypedef struct rr_tconv_t:
        const float *x
        int W, cin
        const float *y
        int OW, cout
        int kh, kw, sh, sw, relu
        int ldg, cip
        const float *wt
        float *acc
    void rr_tconv_load_g(const rr_tconv_t *c, const int32_t *pix, int m, float *g)
    void rr_tconv_dw(const rr_tconv_t *c, const int32_t *pix, int m, const float *g,
                     float *dw, float *db)
    void rr_tconv_dx(const rr_tconv_t *c, int m, const float *g, float *dx)
    void rr_linear_node(const float *y, int C, const float *w, float *dw, int npad,
                        const double *P, int t, int end, float *acc, float *s)


def _pad8(n):
    return (n + 7) // 8 * 8


def store_changed(const float[:, ::1] new, float[:, ::1] buf, int32_t[::1] pix, float[:, ::1] old):
    """Copy `new` (pixels, C) into `buf`; list the pixels that differ in pix, their previous
    values in old (same row order). Returns how many. NaN never compares equal, so it counts
    as a change (the forward then propagates it, and the loss check catches it)."""
    cdef int P = new.shape[0], C = new.shape[1], p, c, n = 0
    cdef bint diff
    with nogil:
        for p in range(P):
            diff = False
            for c in range(C):
                if new[p, c] != buf[p, c]:
                    diff = True
                    break
            if diff:
                pix[n] = p
                for c in range(C):
                    old[n, c] = buf[p, c]
                    buf[p, c] = new[p, c]
                n += 1
    return n


def dilate(const int32_t[::1] pix, int n, int W, int OH, int OW, int kh, int kw, int sh, int sw,
           uint8_t[::1] mask, int32_t[::1] out):
    """Output positions of an unpadded conv whose window holds any input pixel in pix[:n],
    sorted, into out. Returns how many. mask (OH*OW, zero) is scratch, left zero."""
    cdef int i, p, iy, ix, oy, ox, oy0, oy1, ox0, ox1, lo, m = 0
    with nogil:
        for i in range(n):
            p = pix[i]
            iy = p // W
            ix = p % W
            lo = iy - kh + 1
            oy0 = 0 if lo <= 0 else (lo + sh - 1) // sh
            oy1 = min(OH - 1, iy // sh)
            lo = ix - kw + 1
            ox0 = 0 if lo <= 0 else (lo + sw - 1) // sw
            ox1 = min(OW - 1, ix // sw)
            for oy in range(oy0, oy1 + 1):
                for ox in range(ox0, ox1 + 1):
                    mask[oy * OW + ox] = 1
        for p in range(OH * OW):
            if mask[p]:
                mask[p] = 0
                out[m] = p
                m += 1
    return m


def pack_conv_dx(w):
    """(O, I, kh, kw) conv weights -> [kh*kw][pad8(O)][pad8(I)], the input-gradient layout."""
    w = np.asarray(w, np.float32)
    o, i, kh, kw = w.shape
    packed = np.zeros((kh * kw, _pad8(o), _pad8(i)), np.float32)
    packed[:, :o, :i] = w.transpose(2, 3, 0, 1).reshape(kh * kw, o, i)
    return packed


cdef class ConvGrad:
    """Backward of one unpadded Conv (+ ReLU) over the nodes recomputed at a frame.

    x_buf (H, W, cin) and y_buf (OH, OW, cout) must hold the values at that frame. Each node
    takes its summed gradient from acc (zeroing it), masks it by the ReLU, adds into the weight
    and bias gradients, and (when acc_prev is given) adds W^T g into acc_prev over its window."""
    cdef rr_tconv_t c
    cdef object keep
    cdef float[:, ::1] dw_t
    cdef float[:, ::1] db_t
    cdef float[:, ::1] g_t
    cdef float[::1] dx
    cdef float *acc_prev
    cdef int threads, taps

    def __init__(self, x_buf, y_buf, acc, acc_prev, wt, kernel, strides, bint relu, int threads):
        for name, a in (("x", x_buf), ("y", y_buf), ("acc", acc), ("wt", wt)):
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(f"{name} must be a C-contiguous float32 array")
        self.c.x = fptr(x_buf)
        self.c.W, self.c.cin = x_buf.shape[1], x_buf.shape[2]
        self.c.y = fptr(y_buf)
        self.c.OW, self.c.cout = y_buf.shape[1], y_buf.shape[2]
        self.c.kh, self.c.kw = kernel
        self.c.sh, self.c.sw = strides
        self.c.relu = relu
        self.c.ldg, self.c.cip = _pad8(self.c.cout), _pad8(self.c.cin)
        if wt.shape != (kernel[0] * kernel[1], self.c.ldg, self.c.cip):
            raise ValueError(f"wt has shape {wt.shape}, want {(kernel[0] * kernel[1], self.c.ldg, self.c.cip)}")
        self.c.wt = fptr(wt)
        self.c.acc = fptr(acc)
        self.taps = kernel[0] * kernel[1]
        self.threads = rr_num_threads(threads)
        self.acc_prev = fptr(acc_prev) if acc_prev is not None else NULL
        npix = y_buf.shape[0] * y_buf.shape[1]
        self.dw_t = np.zeros((self.threads, self.taps * self.c.cin * self.c.ldg), np.float32)
        self.db_t = np.zeros((self.threads, self.c.ldg), np.float32)
        self.g_t = np.zeros((self.threads, RR_TMR * self.c.ldg), np.float32)
        tiles = (npix + RR_TMR - 1) // RR_TMR
        self.dx = np.zeros(tiles * RR_TMR * self.taps * self.c.cip if acc_prev is not None else 1,
                           np.float32)
        self.keep = (x_buf, y_buf, acc, acc_prev, wt)

    def run(self, const int32_t[::1] pix, int n):
        if n <= 0:
            return
        cdef int ntiles = (n + RR_TMR - 1) // RR_TMR, tile, tid, m, i, p, oy, ox, ky, kx, ci
        cdef int nt = self.threads if ntiles >= 2 else 1
        cdef bint want_dx = self.acc_prev != NULL
        cdef size_t per_node = <size_t> self.taps * self.c.cip
        cdef float *dst
        cdef const float *src
        with nogil:
            for tile in prange(ntiles, num_threads=nt, schedule="static"):
                tid = threadid()
                m = min(RR_TMR, n - tile * RR_TMR)
                rr_tconv_load_g(&self.c, &pix[tile * RR_TMR], m, &self.g_t[tid, 0])
                rr_tconv_dw(&self.c, &pix[tile * RR_TMR], m, &self.g_t[tid, 0],
                            &self.dw_t[tid, 0], &self.db_t[tid, 0])
                if want_dx:
                    rr_tconv_dx(&self.c, m, &self.g_t[tid, 0], &self.dx[tile * RR_TMR * per_node])
            if want_dx:
                # windows of nodes overlap, so the scatter into acc_prev is serial (it is
                # 1/cout of the work above)
                for i in range(n):
                    p = pix[i]
                    oy = p // self.c.OW
                    ox = p % self.c.OW
                    src = &self.dx[i * per_node]
                    for ky in range(self.c.kh):
                        for kx in range(self.c.kw):
                            dst = self.acc_prev + ((oy * self.c.sh + ky) * self.c.W
                                                   + ox * self.c.sw + kx) * self.c.cin
                            for ci in range(self.c.cin):
                                dst[ci] += src[ci]
                            src += self.c.cip

    def take_grads(self):
        """(dW (O, I, kh, kw), db (O,)) summed since the last call; resets them."""
        o, i, kh, kw = self.c.cout, self.c.cin, self.c.kh, self.c.kw
        dw = np.asarray(self.dw_t).sum(0).reshape(kh, kw, i, self.c.ldg)[..., :o]
        db = np.asarray(self.db_t).sum(0)[:o]
        np.asarray(self.dw_t)[:] = 0
        np.asarray(self.db_t)[:] = 0
        return np.ascontiguousarray(dw.transpose(3, 2, 0, 1)), db.copy()


cdef class LinearGrad:
    """Backward of the reused Flatten -> Gemm from float64 prefix sums of its output gradients.

    y_buf (H, W, C) holds the Gemm's spatial input at the current frame; w is packed
    [H*W][C][npad]. A node (p, [t, end[p])) adds its summed gradient into dw (same layout) and
    W_p^T s into acc (H*W, C), then end[p] = t."""
    cdef object keep
    cdef const float *y
    cdef const float *w
    cdef float *acc
    cdef int C, npad, threads
    cdef float[:, :, ::1] dw
    cdef float[:, ::1] s_t

    def __init__(self, y_buf, w, acc, int threads):
        for name, a in (("y", y_buf), ("w", w), ("acc", acc)):
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(f"{name} must be a C-contiguous float32 array")
        self.C, self.npad = w.shape[1], w.shape[2]
        if y_buf.shape[2] != self.C or y_buf.shape[0] * y_buf.shape[1] != w.shape[0]:
            raise ValueError(f"linear input {y_buf.shape} does not match packed weights {w.shape}")
        self.y, self.w, self.acc = fptr(y_buf), fptr(w), fptr(acc)
        self.threads = rr_num_threads(threads)
        self.dw = np.zeros(w.shape, np.float32)
        self.s_t = np.zeros((self.threads, self.npad), np.float32)
        self.keep = (y_buf, w, acc)

    def run(self, const int32_t[::1] pix, int n, const double[:, ::1] P, int t, int32_t[::1] end):
        if n <= 0:
            return
        if P.shape[1] != self.npad:
            raise ValueError(f"prefix sums have {P.shape[1]} columns, want {self.npad}")
        cdef int i, p, tid, nt = self.threads if n >= 16 else 1
        cdef size_t wstride = <size_t> self.C * self.npad
        with nogil:
            for i in prange(n, num_threads=nt, schedule="static"):
                tid = threadid()
                p = pix[i]
                rr_linear_node(self.y + <size_t> p * self.C, self.C, self.w + p * wstride,
                               &self.dw[p, 0, 0], self.npad, &P[0, 0], t, end[p],
                               self.acc + <size_t> p * self.C, &self.s_t[tid, 0])
                end[p] = t

    def take_grad(self):
        """dW in the packed layout, summed since the last call; resets it."""
        out = np.array(self.dw)
        np.asarray(self.dw)[:] = 0
        return out


def adam_update(float[::1] p, const float[::1] g, float[::1] m, float[::1] v, float lr, float b1,
                float b2, float eps, float bc1, float bc2_sqrt, int threads):
    """One Adam step in place, in torch.optim.Adam's order of operations."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef int nt = rr_num_threads(threads) if n >= 65536 else 1
    cdef float step = lr / bc1, gi
    with nogil:
        for i in prange(n, num_threads=nt, schedule="static"):
            gi = g[i]
            m[i] = m[i] + (1.0 - b1) * (gi - m[i])
            v[i] = v[i] * b2 + (1.0 - b2) * gi * gi
            p[i] = p[i] - step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps)
