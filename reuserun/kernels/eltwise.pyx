# Per-pixel kernels bound to session buffers: activations, broadcast binaries, gathers
# (slice, pad, nearest resize, channel copies), bilinear resize and pooling.
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t
import numpy as np

from reuserun.kernels.base cimport Kernel
from reuserun.kernels.common cimport RR_PAR_ELEMS, RR_SHARES_PER_THREAD, fptr, reloc, rr_threads_for

cdef extern from "rr_eltwise.h" nogil:
    enum:
        RR_K_EW
        RR_K_GATHER
        RR_K_LINEAR
        RR_K_POOL
        RR_K_NORM
        RR_K_SOFTMAX
    ctypedef struct rr_operand_t:
        const float *base
        long ps
        long cs
    ctypedef struct rr_ew_t:
        float *y
        int ldy, C, act
        float alpha, beta
        rr_operand_t a, b, slope
        int binop
    ctypedef struct rr_gather_t:
        const float *x
        int W, ldx
        float *y
        int OW, ldy, C
        const int32_t *ymap
        const int32_t *xmap
        float value
        const int32_t *cmap
    ctypedef struct rr_linear_t:
        const float *x
        int W, ldx
        float *y
        int OW, ldy, C
        const int32_t *y0
        const int32_t *y1
        const int32_t *x0
        const int32_t *x1
        const float *wy0
        const float *wy1
        const float *wx0
        const float *wx1
    ctypedef struct rr_pool_t:
        const float *x
        int H, W, ldx
        float *y
        int OH, OW, ldy, C
        int kh, kw, sh, sw, pt, pl, dh, dw
        int is_max, count_include_pad
        int ph_end, pw_end
    ctypedef struct rr_norm_t:
        const float *x
        int ldx
        float *y
        int ldy, C
        const float *scale
        const float *bias
        float eps
    ctypedef struct rr_softmax_t:
        const float *x
        int ldx
        float *y
        int ldy, C
    void rr_pixel_list(int kind, const void *params, const int32_t *pix, int i0, int i1, uint8_t *mask,
                       float thr)
    int rr_global_pool_block(const float *x, int npix, int ldx, int c0, int nc, int is_max,
                             float *out, float thr)
    int rr_global_pool_16(const float *x, int npix, int ldx, int c0, int is_max, float *out, float thr)
    int rr_global_pool_4(const float *x, int npix, int ldx, int c0, int is_max, float *out, float thr)

BINOPS = {"add": 0, "sub": 1, "mul": 2, "div": 3}

cdef class PixelKernel(Kernel):
    """Base: runs rr_pixel over a pixel list, in parallel when the work outweighs a fork/join.
    cost: elements a pixel reads and writes (channels times taps), set by each kernel."""
    cdef int kind
    cdef void *params
    cdef object keep
    cdef long cost
    cdef long min_work          # the least n * cost worth a second thread

    def __cinit__(self, *args, **kwargs):
        self.min_work = RR_PAR_ELEMS

    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mp, float thr, int threads) except -1 nogil:
        cdef int nt = rr_threads_for(threads, <long> n * self.cost, self.min_work), t
        cdef int ns = nt * RR_SHARES_PER_THREAD
        if nt == 1:  # no parallel region: entering one costs about a microsecond even alone
            rr_pixel_list(self.kind, self.params, pix, 0, n, mp, thr)
        else:  # a few contiguous shares of the list per thread, so runs stay long
            for t in prange(ns, num_threads=nt, schedule="dynamic"):
                rr_pixel_list(self.kind, self.params, pix, <int> (<long> n * t // ns),
                              <int> (<long> n * (t + 1) // ns), mp, thr)
        return 0


cdef int32_t *iptr(object a) except NULL:
    cdef const int32_t[::1] v = a
    return <int32_t *> &v[0]


def operand(buf, int off, per_pixel, per_channel):
    """Describe a binary operand: buf is an NHWC buffer (per_pixel) or a flat vector/scalar."""
    ps = buf.shape[2] if per_pixel else 0
    return (buf, off, ps, 1 if per_channel else 0)


cdef class ElementwiseKernel(PixelKernel):
    cdef rr_ew_t e

    def __init__(self, y_buf, int y_off, int C, a, b=None, str binop="", int act=0,
                 float alpha=0.0, float beta=0.0, slope=None):
        """a, b: operands from `operand()`; slope: per-channel (C,) PRelu slope or None."""
        self.kind = RR_K_EW
        self.cost = 3 * C
        # it streams memory: a second thread pays for waking up only above about half a million
        # values (MobileNetV3's adds and squeeze-excite products of 0.2-0.5M took 1.1-1.7x
        # longer on 2 threads than on 1)
        self.min_work = 4 * RR_PAR_ELEMS
        self.params = &self.e
        keep = [y_buf, a[0]]
        self.e.y = fptr(y_buf) + y_off
        self.e.ldy = y_buf.shape[2]
        self.e.C = C
        self.e.act, self.e.alpha, self.e.beta = act, alpha, beta
        self.e.a.base = fptr(a[0]) + <long> a[1]
        self.e.a.ps, self.e.a.cs = a[2], a[3]
        self.e.binop = BINOPS[binop] if binop else -1
        if b is not None:
            keep.append(b[0])
            self.e.b.base = fptr(b[0]) + <long> b[1]
            self.e.b.ps, self.e.b.cs = b[2], b[3]
        self.e.slope.base = NULL
        if slope is not None:
            slope = np.ascontiguousarray(slope, np.float32).reshape(-1)
            keep.append(slope)
            self.e.slope.base = fptr(slope)
            self.e.slope.ps, self.e.slope.cs = 0, (1 if slope.size > 1 else 0)
        self.keep = keep

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.e.y = <float *> reloc(self.e.y, moves)
        self.e.a.base = <const float *> reloc(self.e.a.base, moves)
        if self.e.binop >= 0:
            self.e.b.base = <const float *> reloc(self.e.b.base, moves)


cdef class GatherKernel(PixelKernel):
    cdef rr_gather_t g

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C, ymap, xmap, float value=0.0, cmap=None,
                 int cmap_from=-1):
        """cmap: output channel c reads input channel cmap[c] (a channel shuffle or selection), or
        None; cmap_from: the input's channels (default C)."""
        self.kind = RR_K_GATHER
        self.cost = 2 * C
        self.params = &self.g
        ymap = np.ascontiguousarray(ymap, np.int32)
        xmap = np.ascontiguousarray(xmap, np.int32)
        self.g.cmap = NULL
        if cmap is not None:
            cmap = np.ascontiguousarray(cmap, np.int32)
            cmap_from = C if cmap_from < 0 else cmap_from
            if cmap_from > x_buf.shape[2] - x_off:
                raise ValueError("cmap_from exceeds the input buffer's channels")
            if cmap.shape != (C,) or cmap.min() < 0 or cmap.max() >= cmap_from:
                raise ValueError("cmap must give each of the C output channels one of the input's channels")
            self.g.cmap = iptr(cmap)
        self.keep = (x_buf, y_buf, ymap, xmap, cmap)
        self.g.x = fptr(x_buf) + x_off
        self.g.W, self.g.ldx = x_buf.shape[1], x_buf.shape[2]
        self.g.y = fptr(y_buf) + y_off
        self.g.OW, self.g.ldy = y_buf.shape[1], y_buf.shape[2]
        self.g.C = C
        self.g.ymap, self.g.xmap = iptr(ymap), iptr(xmap)
        self.g.value = value

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.g.x = <const float *> reloc(self.g.x, moves)
        self.g.y = <float *> reloc(self.g.y, moves)


cdef class LinearResizeKernel(PixelKernel):
    cdef rr_linear_t r

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C, ys, xs):
        """ys, xs: (i0, i1, w0, w1) arrays per output row / column."""
        self.kind = RR_K_LINEAR
        self.cost = 5 * C
        self.params = &self.r
        ys = [np.ascontiguousarray(a, np.int32 if i < 2 else np.float32) for i, a in enumerate(ys)]
        xs = [np.ascontiguousarray(a, np.int32 if i < 2 else np.float32) for i, a in enumerate(xs)]
        self.keep = (x_buf, y_buf, ys, xs)
        self.r.x = fptr(x_buf) + x_off
        self.r.W, self.r.ldx = x_buf.shape[1], x_buf.shape[2]
        self.r.y = fptr(y_buf) + y_off
        self.r.OW, self.r.ldy = y_buf.shape[1], y_buf.shape[2]
        self.r.C = C
        self.r.y0, self.r.y1 = iptr(ys[0]), iptr(ys[1])
        self.r.x0, self.r.x1 = iptr(xs[0]), iptr(xs[1])
        self.r.wy0, self.r.wy1 = fptr(ys[2]), fptr(ys[3])
        self.r.wx0, self.r.wx1 = fptr(xs[2]), fptr(xs[3])

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.r.x = <const float *> reloc(self.r.x, moves)
        self.r.y = <float *> reloc(self.r.y, moves)


cdef class PoolKernel(PixelKernel):
    cdef rr_pool_t q

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C, kernel, strides, pads, dilations, bint is_max,
                 bint count_include_pad=False):
        self.kind = RR_K_POOL
        self.cost = C * (kernel[0] * kernel[1] + 1)
        self.params = &self.q
        self.keep = (x_buf, y_buf)
        self.q.x = fptr(x_buf) + x_off
        self.q.H, self.q.W, self.q.ldx = x_buf.shape[0], x_buf.shape[1], x_buf.shape[2]
        self.q.y = fptr(y_buf) + y_off
        self.q.OH, self.q.OW, self.q.ldy = y_buf.shape[0], y_buf.shape[1], y_buf.shape[2]
        self.q.C = C
        self.q.kh, self.q.kw = kernel
        self.q.sh, self.q.sw = strides
        self.q.pt, self.q.pl = pads[0], pads[1]
        self.q.dh, self.q.dw = dilations
        self.q.is_max, self.q.count_include_pad = is_max, count_include_pad
        self.q.ph_end = x_buf.shape[0] + pads[0] + pads[2]
        self.q.pw_end = x_buf.shape[1] + pads[1] + pads[3]

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.q.x = <const float *> reloc(self.q.x, moves)
        self.q.y = <float *> reloc(self.q.y, moves)


cdef class GlobalPoolKernel(Kernel):
    """Global average / max pooling of an NHWC view into one pixel, parallel over channel blocks
    (each channel sums its pixels in row-major order, whatever the thread count)."""
    cdef object keep
    cdef const float *x
    cdef float *y
    cdef int npix, ldx, C, is_max

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C, bint is_max):
        self.keep = (x_buf, y_buf)
        self.x = fptr(x_buf) + x_off
        self.y = fptr(y_buf) + y_off
        self.npix = x_buf.shape[0] * x_buf.shape[1]
        self.ldx = x_buf.shape[2]
        self.C, self.is_max = C, is_max

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.x = <const float *> reloc(self.x, moves)
        self.y = <float *> reloc(self.y, moves)

    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mask, float thr, int threads) except -1 nogil:
        # work items: groups of 128 channels, then of 32, then the 8-channel blocks left over
        cdef int nw = self.C // 128, nq = (self.C - nw * 128) // 32
        cdef int nblk = (self.C - nw * 128 - nq * 32 + 7) // 8, b, changed = 0
        # a pool only streams its input: a second thread pays for waking up below about 1M
        # values (MobileNetV3's squeeze-excite pools of 190-270 thousand took 1.3-2x longer on 2)
        cdef int nt = rr_threads_for(threads, <long> self.npix * self.C, 8 * RR_PAR_ELEMS)
        if nw + nq + nblk < 2:
            nt = 1
        if nt == 1:
            for b in range(nw + nq + nblk):
                changed += _pool_item(self, b, nw, nq, thr)
        else:
            for b in prange(nw + nq + nblk, num_threads=nt, schedule="dynamic"):
                changed += _pool_item(self, b, nw, nq, thr)
        if changed and mask != NULL:
            mask[0] = 1
        return 0


cdef inline int _pool_item(GlobalPoolKernel k, int b, int nw, int nq, float thr) noexcept nogil:
    """Work item b of a global pool: 128 channels (the first nw items), 32 (the next nq), or a
    block of 8 or fewer."""
    cdef int c0
    if b < nw:
        return rr_global_pool_16(k.x, k.npix, k.ldx, b * 128, k.is_max, k.y, thr)
    if b < nw + nq:
        return rr_global_pool_4(k.x, k.npix, k.ldx, nw * 128 + (b - nw) * 32, k.is_max, k.y, thr)
    c0 = nw * 128 + nq * 32 + (b - nw - nq) * 8
    return rr_global_pool_block(k.x, k.npix, k.ldx, c0, min(8, k.C - c0), k.is_max, k.y, thr)


cdef class ChannelNormKernel(PixelKernel):
    cdef rr_norm_t q

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C, scale, bias, float epsilon):
        """Each pixel's C channels normalized over themselves, then scale and bias (C,) each."""
        self.kind = RR_K_NORM
        self.cost = 4 * C
        self.params = &self.q
        scale = np.ascontiguousarray(scale, np.float32).reshape(C)
        bias = np.ascontiguousarray(bias, np.float32).reshape(C)
        self.keep = (x_buf, y_buf, scale, bias)
        self.q.x = fptr(x_buf) + x_off
        self.q.ldx = x_buf.shape[2]
        self.q.y = fptr(y_buf) + y_off
        self.q.ldy = y_buf.shape[2]
        self.q.C = C
        self.q.scale, self.q.bias, self.q.eps = fptr(scale), fptr(bias), epsilon

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.q.x = <const float *> reloc(self.q.x, moves)
        self.q.y = <float *> reloc(self.q.y, moves)


cdef class ChannelSoftmaxKernel(PixelKernel):
    cdef rr_softmax_t q

    def __init__(self, x_buf, int x_off, y_buf, int y_off, int C):
        """Each pixel's C channels through a softmax."""
        self.kind = RR_K_SOFTMAX
        self.cost = 4 * C
        self.params = &self.q
        self.keep = (x_buf, y_buf)
        self.q.x = fptr(x_buf) + x_off
        self.q.ldx = x_buf.shape[2]
        self.q.y = fptr(y_buf) + y_off
        self.q.ldy = y_buf.shape[2]
        self.q.C = C

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.q.x = <const float *> reloc(self.q.x, moves)
        self.q.y = <float *> reloc(self.q.y, moves)
