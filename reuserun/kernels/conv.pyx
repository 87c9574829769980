# Convolution, depthwise convolution and transposed convolution over output-pixel lists.
# The work split and tiling live here; the arithmetic lives in rr_conv.h.
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t
cimport numpy as cnp
import numpy as np

from reuserun.kernels.base cimport Kernel
from reuserun.kernels.common cimport (RR_NOGIL_ELEMS, RR_PAR_ELEMS, RR_PAR_MACS, RR_SHARES_PER_THREAD,
                                      RR_WEIGHT_READ_MACS, fptr, reloc, rr_act,
                                      rr_num_threads, rr_threads_for)

cnp.import_array()

cdef extern from "rr_conv.h" nogil:
    enum:
        RR_MR
        RR_MR_NARROW
        RR_NR
    ctypedef struct rr_conv_t:
        const float *x
        int H, W, ldx
        float *y
        int OH, OW, ldy
        int kh, kw, sh, sw, pt, pl, dh, dw
        int transposed
        const int32_t *tiy
        const int32_t *tix
        int pointwise
        int groups, cin, cout
        int nocb
        const float *w
        const float *w1
        const float *bias
        const float *slope
        int act
        float alpha, beta
        const float *post_scale
        const float *post_shift
        const float *zeros
        const float *res
        int ldr
        int res_first
        int res_after_act
    void rr_conv_tile(const rr_conv_t *c, const int32_t *pix, int m, int gb, int count,
                      const int32_t *taps, int ntaps, uint8_t *mask, float thr)
    int rr_conv_blocks_per_item()
    ctypedef struct rr_dw_t:
        const float *x
        int H, W, ldx
        float *y
        int OH, OW, ldy
        int kh, kw, sh, sw, pt, pl, dh, dw
        int C
        const float *w
        const float *bias
        const float *slope
        int act
        float alpha, beta
        const float *post_scale
        const float *post_shift
    void rr_conv_tile_narrow(const rr_conv_t *c, const int32_t *pix, int m, const int32_t *taps, int ntaps,
                             uint8_t *mask, float thr)
    void rr_conv1_pixels(const rr_conv_t *c, const int32_t *pix, int n, const int32_t *taps, int ntaps,
                         uint8_t *mask, float thr)
    ctypedef struct rr_shuffle_t:
        const int32_t *xoff
        const float *wl
        const float *bl
        const float *sl
    void rr_shuffle_pixels(const rr_conv_t *c, const rr_shuffle_t *t, const int32_t *pix, int n,
                           uint8_t *mask, float thr)
    void rr_dw_pixel(const rr_dw_t *c, int p, uint8_t *mask, float thr)
    void rr_dw_list(const rr_dw_t *c, const int32_t *pix, int n, uint8_t *mask, float thr)
    void rr_gemm_pixel_cols(const float *x, int C, const float *w, int npad, int blocked, float *out, int n0, int n1)
    void rr_gemm_pixel_partial(const float *x, int C, const float *w, int npad, int blocked, float *out)
    void rr_stack_sum_pixel(const float *partials, size_t stride, int k, int C, const float *bias,
                            int act, float alpha, float beta, float *dst, float thr, int *changed)
    void rr_gemm_pixel_sum(const float *partial, int npix, int npad, const float *bias, float *y)

MR = RR_MR
NR = RR_NR


def pack_conv_weights(w, transposed=False, groups=1):
    """Pack (O, I/g, kh, kw) conv weights (or (I, O/g, kh, kw) transposed ones) into
    [g*nocb][kh*kw][cin][16], zero padded in the output channels."""
    w = np.asarray(w, np.float32)
    if transposed:
        cin_total, cout, kh, kw = w.shape
        cin = cin_total // groups
        wg = w.reshape(groups, cin, cout, kh, kw).transpose(0, 2, 1, 3, 4)  # g, co, ci, kh, kw
    else:
        cout_total, cin, kh, kw = w.shape
        cout = cout_total // groups
        wg = w.reshape(groups, cout, cin, kh, kw)
    nocb = (cout + RR_NR - 1) // RR_NR
    packed = np.zeros((groups, nocb * RR_NR, kh * kw, cin), np.float32)
    packed[:, :cout] = wg.reshape(groups, cout, cin, kh * kw).transpose(0, 1, 3, 2)
    # -> [g][ocb][tap][ci][16]
    packed = packed.reshape(groups, nocb, RR_NR, kh * kw, cin).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(packed), nocb


def transposed_taps(int out_len, int in_len, int k, int s, int p, int d):
    """(k, out_len) int32: the input index that output o reads at tap t in a transposed conv
    (o = i * s - p + t * d), -1 where there is none."""
    o = np.arange(out_len)[None, :] + p - np.arange(k)[:, None] * d
    i = o // s
    ok = (o >= 0) & (o % s == 0) & (i < in_len)
    return np.ascontiguousarray(np.where(ok, i, -1), np.int32)


def pad_channels(v, groups, cout, nocb, fill=0.0):
    """Per-output-channel vector laid out per [group][block*16]."""
    out = np.full((groups, nocb * RR_NR), fill, np.float32)
    out[:, :cout] = np.asarray(v, np.float32).reshape(groups, cout)
    return out.reshape(-1)


cdef class ConvKernel(Kernel):
    """A conv (or transposed conv) bound to its input and output buffers.

    x_buf / y_buf are the session's NHWC buffers (H, W, Ctot); x_off / y_off are channel
    offsets, so a kernel may read a channel slice and write into a concat's buffer."""
    cdef rr_conv_t c
    cdef object keep
    cdef object all_taps
    cdef const int32_t *taps0     # every tap, in order (all_taps' data)
    cdef int ntaps0
    cdef list phase_taps        # transposed: taps per output phase
    cdef int32_t[::1] sorted_pix
    cdef int32_t[::1] phase_counts  # transposed: counting-sort scratch, (phases + 1) and (phases)
    cdef int32_t[::1] phase_fill
    cdef object phase_of        # transposed: each output pixel's phase (output position mod stride)
    cdef int32_t[::1] full_sorted   # transposed: every output pixel, by phase
    cdef int32_t[::1] full_counts   # transposed: where each phase starts in full_sorted (phases + 1)
    cdef int tiles_per_item
    cdef bint narrow            # at most 8 output channels, one group: rr_conv_tile_narrow
    cdef bint single            # one output channel, one group: rr_conv1_pixels
    cdef object tap_tables      # transposed: the arrays behind c.tiy and c.tix
    cdef rr_shuffle_t sh        # transposed, kernel == stride, 1/2/4 outputs: rr_shuffle_pixels' lane tables
    cdef bint shuffle

    def __init__(self, x_buf, int x_off, y_buf, int y_off, packed, int nocb, bias, slope,
                 kernel, strides, pads, dilations, int groups, int cin, int cout,
                 int act, float alpha, float beta, bint transposed=False, post=None, residual=None):
        """post: (scale, shift), an affine after the activation laid out like bias, or None.
        residual: (buffer, channel offset, first, after_act), a tensor shaped like the output
        added after the bias, before the activation or (after_act) after it: an Add this conv
        feeds (first: the Add reads it first). None: no residual; see takes_residual."""
        for name, a in (("x", x_buf), ("y", y_buf), ("w", packed), ("bias", bias)):
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(f"{name} must be a C-contiguous float32 array")
        zeros = np.zeros(max(cin * kernel[1], 1) + 16, np.float32)  # a whole kernel row of padding
        self.keep = (x_buf, y_buf, packed, bias, slope, zeros)
        self.c.x = fptr(x_buf) + x_off
        self.c.H, self.c.W, self.c.ldx = x_buf.shape[0], x_buf.shape[1], x_buf.shape[2]
        self.c.y = fptr(y_buf) + y_off
        self.c.OH, self.c.OW, self.c.ldy = y_buf.shape[0], y_buf.shape[1], y_buf.shape[2]
        self.c.kh, self.c.kw = kernel
        self.c.sh, self.c.sw = strides
        self.c.pt, self.c.pl = pads[0], pads[1]
        self.c.dh, self.c.dw = dilations
        self.c.transposed = transposed
        self.c.tiy = self.c.tix = NULL
        if transposed:
            tiy = transposed_taps(y_buf.shape[0], x_buf.shape[0], kernel[0], strides[0], pads[0], dilations[0])
            tix = transposed_taps(y_buf.shape[1], x_buf.shape[1], kernel[1], strides[1], pads[1], dilations[1])
            self.tap_tables = (tiy, tix)
            self.c.tiy = <const int32_t *> cnp.PyArray_DATA(tiy)
            self.c.tix = <const int32_t *> cnp.PyArray_DATA(tix)
        self.c.pointwise = (not transposed and tuple(kernel) == (1, 1) and tuple(strides) == (1, 1)
                            and not any(pads) and x_buf.shape[0] == y_buf.shape[0]
                            and x_buf.shape[1] == y_buf.shape[1])
        self.c.groups, self.c.cin, self.c.cout, self.c.nocb = groups, cin, cout, nocb
        self.c.w = fptr(packed)
        self.c.bias = fptr(bias)
        self.c.slope = fptr(slope) if slope is not None else NULL
        self.c.act, self.c.alpha, self.c.beta = act, alpha, beta
        self.c.post_scale = self.c.post_shift = NULL
        if post is not None:
            post = tuple(np.ascontiguousarray(v, np.float32) for v in post)
            if transposed or any(v.shape != bias.shape for v in post):
                raise ValueError("post: a (scale, shift) pair laid out like bias, for a conv")
            self.keep = self.keep + post
            self.c.post_scale, self.c.post_shift = fptr(post[0]), fptr(post[1])
        self.c.zeros = fptr(zeros)
        self.c.res, self.c.ldr, self.c.res_first, self.c.res_after_act = NULL, 0, 0, 0
        if residual is not None:
            r_buf, r_off, first, after_act = residual
            if not takes_residual(groups, cout, transposed) or post is not None:
                raise ValueError("a residual is added only by the tiled conv path, without a post affine")
            if (r_buf.dtype != np.float32 or not r_buf.flags.c_contiguous or r_buf.shape[:2] != y_buf.shape[:2]
                    or r_off + groups * cout > r_buf.shape[2]):
                raise ValueError("the residual must be a C-contiguous float32 buffer over the output's grid")
            self.keep = self.keep + (r_buf,)
            self.c.res = fptr(r_buf) + <int> r_off
            self.c.ldr, self.c.res_first, self.c.res_after_act = r_buf.shape[2], bool(first), bool(after_act)
        ntap = kernel[0] * kernel[1]
        self.all_taps = np.arange(ntap, dtype=np.int32)
        self.taps0, self.ntaps0 = <const int32_t *> cnp.PyArray_DATA(self.all_taps), ntap
        # keep one item's input rows plus its weight block within about 256 KiB of L2
        k = ntap * cin
        self.narrow = groups == 1 and cout <= 8 and not transposed
        self.single = groups == 1 and cout == 1
        self.c.w1 = NULL
        if self.single:  # rr_conv1_pixels reads one tap's weights as a contiguous channel run
            cpad = (cin + 7) // 8 * 8
            w1 = np.zeros((ntap, cpad), np.float32)
            w1[:, :cin] = np.asarray(packed).reshape(ntap, cin, RR_NR)[:, :, 0]
            self.keep = self.keep + (w1,)
            self.c.w1 = fptr(w1)
        self.tiles_per_item = max(1, min(32, (256 * 1024) // (4 * k * (RR_MR + RR_NR))))
        self.shuffle = (transposed and groups == 1 and cout in (1, 2, 4) and tuple(kernel) == tuple(strides)
                        and not any(pads) and tuple(dilations) == (1, 1)
                        and y_buf.shape[0] == x_buf.shape[0] * strides[0]
                        and y_buf.shape[1] == x_buf.shape[1] * strides[1])
        if self.shuffle:
            self._init_shuffle(packed, bias, slope, kernel, cin, cout)
        if transposed and not self.shuffle:  # the general path sorts pixels by phase
            self.phase_taps = []
            for py in range(strides[0]):
                for px in range(strides[1]):
                    self.phase_taps.append(np.array(
                        [t for t in range(ntap)
                         if ((t // kernel[1]) * dilations[0]) % strides[0] == py
                         and ((t % kernel[1]) * dilations[1]) % strides[1] == px], np.int32))
            self.sorted_pix = np.empty(y_buf.shape[0] * y_buf.shape[1], np.int32)
            self.phase_counts = np.empty(strides[0] * strides[1] + 1, np.int32)
            self.phase_fill = np.empty(strides[0] * strides[1], np.int32)
            oy = (np.arange(y_buf.shape[0]) + pads[0]) % strides[0]
            ox = (np.arange(y_buf.shape[1]) + pads[1]) % strides[1]
            self.phase_of = np.ascontiguousarray((oy[:, None] * strides[1] + ox[None, :]).reshape(-1), np.int32)
            # every pixel (a dense run) sorted by phase once here: the sort costs a quarter of a
            # dense run of a narrow transposed conv
            self.full_sorted = np.argsort(self.phase_of, kind="stable").astype(np.int32)
            self.full_counts = np.concatenate(
                [[0], np.cumsum(np.bincount(self.phase_of, minlength=strides[0] * strides[1]))]).astype(np.int32)

    cdef _init_shuffle(self, packed, bias, slope, kernel, int cin, int cout):
        """rr_shuffle_t's lane tables: lane l holds channel l % cout of pixel l // cout."""
        kh, kw = kernel
        lanes = np.arange(8)
        pixel, channel = lanes // cout, lanes % cout
        w = np.asarray(packed).reshape(kh * kw, cin, RR_NR)
        wl = np.empty((kh, kw, cin, 8), np.float32)  # [tap row][first lane's column phase][ci][lane]
        xoff = np.empty((kw, 8), np.int32)
        for ph in range(kw):
            kx = (ph + pixel) % kw
            xoff[ph] = (ph + pixel) // kw * self.c.ldx
            for ky in range(kh):
                wl[ky, ph] = w[ky * kw + kx, :, channel].T
        bl = np.ascontiguousarray(np.asarray(bias, np.float32)[channel])
        sl = None if slope is None else np.ascontiguousarray(np.asarray(slope, np.float32)[channel])
        self.keep = self.keep + (wl, xoff, bl, sl)
        self.sh.xoff = <const int32_t *> cnp.PyArray_DATA(xoff)
        self.sh.wl, self.sh.bl = fptr(wl), fptr(bl)
        self.sh.sl = fptr(sl) if sl is not None else NULL

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.c.x = <const float *> reloc(self.c.x, moves)
        self.c.y = <float *> reloc(self.c.y, moves)
        if self.c.res != NULL:
            self.c.res = <const float *> reloc(self.c.res, moves)

    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mp, float thr, int threads) except -1 nogil:
        if n <= 0:
            return 0
        if self.shuffle:
            self._run_shuffle(pix, n, mp, thr, threads)
        elif not self.c.transposed:
            self._run(pix, n, self.taps0, self.ntaps0, mp, thr, threads)
        else:
            with gil:  # the phase tables are Python-held memoryviews
                self._run_transposed(pix, n, mp, thr, threads)
        return 0

    cdef int _run_transposed(self, const int32_t *pix, int n, uint8_t *mp, float thr, int threads) except -1:
        """Pixels of one phase share their tap list, so they are tiled together (a counting sort
        on the phase of each output pixel, tabulated at load); the kernels run without the GIL."""
        cdef int nph = self.c.sh * self.c.sw, i, ph
        cdef int32_t[::1] counts = self.phase_counts
        cdef int32_t[::1] fill = self.phase_fill
        cdef int32_t[::1] sp = self.sorted_pix
        cdef const int32_t[::1] phase = self.phase_of
        if n == sp.shape[0]:  # pixel lists hold no repeats: this is every pixel
            counts, sp = self.full_counts, self.full_sorted
        else:
            with nogil:
                for ph in range(nph + 1):
                    counts[ph] = 0
                for i in range(n):
                    counts[phase[pix[i]] + 1] += 1
                for ph in range(nph):
                    counts[ph + 1] += counts[ph]
                    fill[ph] = counts[ph]
                for i in range(n):
                    ph = phase[pix[i]]
                    sp[fill[ph]] = pix[i]
                    fill[ph] += 1
        cdef int32_t[::1] taps
        for ph in range(nph):
            if counts[ph + 1] > counts[ph]:
                taps = self.phase_taps[ph]
                with nogil:
                    self._run(&sp[counts[ph]], counts[ph + 1] - counts[ph], &taps[0] if taps.shape[0] else NULL,
                              taps.shape[0], mp, thr, threads)
        return 0

    cdef void _run_shuffle(self, const int32_t *pix, int n, uint8_t *mask, float thr, int threads) noexcept nogil:
        # a few contiguous shares of the list per thread, so runs stay long
        cdef int nt = rr_threads_for(threads, <long> n * self.c.cin * self.c.cout, RR_PAR_MACS), t
        cdef int ns = nt * RR_SHARES_PER_THREAD
        if nt == 1:
            rr_shuffle_pixels(&self.c, &self.sh, pix, n, mask, thr)
        else:
            for t in prange(ns, num_threads=nt, schedule="dynamic"):
                rr_shuffle_pixels(&self.c, &self.sh, pix + <long> n * t // ns,
                                  <int> (<long> n * (t + 1) // ns - <long> n * t // ns), mask, thr)

    cdef void _run_single(self, const int32_t *pix, int n, const int32_t *taps, int ntaps,
                          uint8_t *mask, float thr, int threads) noexcept nogil:
        cdef int nt = rr_threads_for(threads, <long> n * self.c.cin * max(ntaps, 1) * 8, RR_PAR_MACS), i
        cdef int chunk = 512, nchunks = (n + 511) // 512
        if nt == 1:
            rr_conv1_pixels(&self.c, pix, n, taps, ntaps, mask, thr)
        else:
            for i in prange(nchunks, num_threads=nt, schedule="dynamic"):
                rr_conv1_pixels(&self.c, pix + i * chunk, min(chunk, n - i * chunk), taps, ntaps, mask, thr)

    cdef void _run(self, const int32_t *pix, int n, const int32_t *taps, int ntaps,
                   uint8_t *mask, float thr, int threads) noexcept nogil:
        if self.single:
            self._run_single(pix, n, taps, ntaps, mask, thr, threads)
            return
        cdef bint narrow = self.narrow
        cdef int mr = RR_MR_NARROW if narrow else RR_MR
        cdef int ntiles = (n + mr - 1) // mr
        cdef int nblk = self.c.groups * self.c.nocb
        # a work item's channels: up to bpi consecutive blocks of one group (several blocks
        # share each input broadcast in the 16-lane tiles)
        cdef int bpi = 1 if narrow else min(rr_conv_blocks_per_item(), self.c.nocb)
        cdef int nsuper = (self.c.nocb + bpi - 1) // bpi
        cdef int nunits = self.c.groups * nsuper
        cdef long k = self.c.kh * self.c.kw * self.c.cin
        cdef int nt = rr_num_threads(threads)
        cdef int item
        if (<long> n + RR_WEIGHT_READ_MACS) * k * nblk * RR_NR < RR_PAR_MACS:
            nt = 1  # a fork/join costs more than this much work (far more when cores are busy)
        cdef int tpi = self.tiles_per_item
        cdef int ngroups = (ntiles + tpi - 1) // tpi
        if nt > 1:  # enough items for every thread to take several
            ngroups = min(ntiles, max(ngroups, (RR_SHARES_PER_THREAD * nt + nunits - 1) // nunits))
        # groups of equal size (67 tiles as 23, 23, 21, not 32, 32, 3): the guided schedule
        # hands the first thread half of the items at once, and with unequal groups that is
        # most of the work
        tpi = (ntiles + ngroups - 1) // ngroups
        ngroups = (ntiles + tpi - 1) // tpi
        cdef int nitems = ngroups * nunits
        if nitems < nt:
            nt = max(1, nitems)
        # Visit order: when the weights outweigh the input rows of the pixels to compute (deep
        # layers, small dirty sets), keep each weight block hot across all tiles; otherwise
        # keep each tile group's input rows hot across all blocks.
        cdef bint block_major = nblk * k * RR_NR > <long> n * k * self.c.groups
        if nt == 1:  # no parallel region: entering one costs about a microsecond even alone
            for item in range(nitems):
                _conv_item(&self.c, item, block_major, narrow, ngroups, nunits, nsuper, bpi, tpi, ntiles,
                           pix, n, taps, ntaps, mask, thr)
        else:
            for item in prange(nitems, num_threads=nt, schedule="guided"):
                _conv_item(&self.c, item, block_major, narrow, ngroups, nunits, nsuper, bpi, tpi, ntiles,
                           pix, n, taps, ntaps, mask, thr)


cdef inline void _conv_item(const rr_conv_t *c, int item, bint block_major, bint narrow, int ngroups,
                            int nunits, int nsuper, int bpi, int tpi, int ntiles, const int32_t *pix, int n,
                            const int32_t *taps, int ntaps, uint8_t *mask, float thr) noexcept nogil:
    """One work item: a group of pixel tiles times one unit of output channels (up to bpi
    consecutive blocks of one group). The n pixels are shared evenly between the tiles (13 as
    5, 4, 4, not 6, 6, 1): a one-pixel tile has too few FMA chains to hide their latency and
    costs nearly what a full one does."""
    cdef int grp, unit, gb, count, t, p0, p1
    if block_major:
        unit = item // ngroups
        grp = item % ngroups
    else:
        grp = item // nunits
        unit = item % nunits
    gb = (unit // nsuper) * c.nocb + (unit % nsuper) * bpi
    count = min(bpi, c.nocb - (unit % nsuper) * bpi)
    for t in range(grp * tpi, min(grp * tpi + tpi, ntiles)):
        p0 = <int> (<long> t * n // ntiles)
        p1 = <int> (<long> (t + 1) * n // ntiles)
        if narrow:
            rr_conv_tile_narrow(c, pix + p0, p1 - p0, taps, ntaps, mask, thr)
        else:
            rr_conv_tile(c, pix + p0, p1 - p0, gb, count, taps, ntaps, mask, thr)


def takes_residual(int groups, int cout, bint transposed):
    """Whether ConvKernel adds a residual in its epilogue for this shape: the tiled path (not a
    transposed conv, nor one group of at most 8 output channels, which the narrow tiles take)."""
    return not transposed and not (groups == 1 and cout <= 8)


def pack_dw_weights(w):
    """(C, 1, kh, kw) depthwise weights -> [kh*kw][Cpad]."""
    w = np.asarray(w, np.float32)
    c, _, kh, kw = w.shape
    cpad = (c + 7) // 8 * 8
    packed = np.zeros((kh * kw, cpad), np.float32)
    packed[:, :c] = w.reshape(c, kh * kw).T
    return packed


cdef class DepthwiseKernel(Kernel):
    cdef rr_dw_t c
    cdef object keep
    cdef int cpad

    def __init__(self, x_buf, int x_off, y_buf, int y_off, packed, bias, slope, int C,
                 kernel, strides, pads, dilations, int act, float alpha, float beta, post=None):
        """post: (scale, shift) per channel, an affine after the activation, or None."""
        if kernel[0] * kernel[1] > 64:
            raise ValueError("depthwise kernel has more than 64 taps")
        self.cpad = (C + 7) // 8 * 8
        bias_p = np.zeros(self.cpad, np.float32)
        bias_p[:C] = bias
        slope_p = None
        if slope is not None:
            slope_p = np.zeros(self.cpad, np.float32)
            slope_p[:C] = slope
        self.keep = (x_buf, y_buf, packed, bias_p, slope_p)
        self.c.x = fptr(x_buf) + x_off
        self.c.H, self.c.W, self.c.ldx = x_buf.shape[0], x_buf.shape[1], x_buf.shape[2]
        self.c.y = fptr(y_buf) + y_off
        self.c.OH, self.c.OW, self.c.ldy = y_buf.shape[0], y_buf.shape[1], y_buf.shape[2]
        self.c.kh, self.c.kw = kernel
        self.c.sh, self.c.sw = strides
        self.c.pt, self.c.pl = pads[0], pads[1]
        self.c.dh, self.c.dw = dilations
        self.c.C = C
        self.c.w = fptr(packed)
        self.c.bias = fptr(bias_p)
        self.c.slope = fptr(slope_p) if slope_p is not None else NULL
        self.c.act, self.c.alpha, self.c.beta = act, alpha, beta
        self.c.post_scale = self.c.post_shift = NULL
        if post is not None:
            padded = tuple(np.zeros(self.cpad, np.float32) for _ in post)
            for dst, v in zip(padded, post):
                dst[:C] = v
            self.keep = self.keep + padded
            self.c.post_scale, self.c.post_shift = fptr(padded[0]), fptr(padded[1])

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.c.x = <const float *> reloc(self.c.x, moves)
        self.c.y = <float *> reloc(self.c.y, moves)

    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mp, float thr, int threads) except -1 nogil:
        cdef int nt = rr_num_threads(threads), i
        if n <= 0:
            return 0
        # depthwise MACs come at a quarter of a dense conv's rate or less (a load per FMA), so a
        # quarter of the MACs is worth a second thread
        if n < 64 or <long> n * self.c.kh * self.c.kw * self.cpad < RR_PAR_MACS // 4:
            nt = 1
        # chunks of the list, each walked run by run (rr_dw_list): long enough for whole rows,
        # short enough that every thread gets a few
        cdef int chunk = max(16, min(256, (n + 4 * nt - 1) // (4 * nt)))
        cdef int nchunks = (n + chunk - 1) // chunk
        if nt == 1:
            rr_dw_list(&self.c, pix, n, mp, thr)
        else:
            for i in prange(nchunks, num_threads=nt, schedule="dynamic"):
                rr_dw_list(&self.c, pix + i * chunk, min(chunk, n - i * chunk), mp, thr)
        return 0


def pack_spatial_gemm(w, C, H, W, blocked=False):
    """Gemm weights (N, C*H*W) over an NCHW-flattened input -> per-pixel slices of shape (C, npad).
    blocked: each slice stored as blocks of 32 output columns, a block's C rows one after
    another, so the kernel streams each block's weights in order (a 1280-wide classifier's rows
    lie 5 KB apart in the plain layout, which training updates in place)."""
    w = np.asarray(w, np.float32)
    n = w.shape[0]
    npad = (n + 7) // 8 * 8
    plain = np.zeros((H * W, C, npad), np.float32)
    plain[:, :, :n] = w.reshape(n, C, H * W).transpose(2, 1, 0)
    if not blocked:
        return plain
    packed = np.empty((H * W, C * npad), np.float32)
    for n0 in range(0, npad, 32):
        wb = min(32, npad - n0)
        packed[:, C * n0:C * (n0 + wb)] = plain[:, :, n0:n0 + wb].reshape(H * W, C * wb)
    return packed.reshape(H * W, C, npad)


cdef class SpatialGemmKernel:
    """Flatten -> Gemm over a spatial tensor, with per-pixel partial sums kept between frames:
    a frame recomputes the partials of its changed pixels, then sums all partials in order.
    (Attributes in conv.pxd: driver.GemmStep runs it without the GIL.)"""

    def __init__(self, x_buf, int x_off, packed, bias, y_flat, partial, int act=0, float alpha=0.0,
                 float beta=0.0, bint blocked=False):
        """partial: (npix, npad) float32, the kept per-pixel partial sums (the caller owns it, so
        a session can save and copy it); act: an activation fused into the Gemm (fuse.py);
        blocked: packed as pack_spatial_gemm(..., blocked=True) lays it out."""
        self.blocked = blocked
        self.npix, self.C, self.npad = packed.shape[0], packed.shape[1], packed.shape[2]
        self.N = y_flat.shape[0]
        assert partial.shape == (self.npix, self.npad) and partial.dtype == np.float32
        bias_p = np.zeros(self.npad, np.float32)
        bias_p[:self.N] = bias
        ybuf = np.zeros(self.npad, np.float32)
        self.ybuf = fptr(ybuf)
        self.keep = (x_buf, packed, partial, bias_p, y_flat, ybuf)
        self.x = fptr(x_buf) + x_off
        self.ldx = x_buf.shape[2]
        self.w = fptr(packed)
        self.partial = fptr(partial)
        self.bias = fptr(bias_p)
        self.y = fptr(y_flat)
        self.act, self.alpha, self.beta = act, alpha, beta

    def relocate(self, const int64_t[:, ::1] moves):
        self.x = <const float *> reloc(self.x, moves)

    def run(self, const int32_t[::1] pix, int n, int threads):
        """Recompute the partials of pixels pix[:n], then y = bias + sum of all partials."""
        if n > pix.shape[0]:
            raise ValueError(f"n={n} exceeds the pixel list ({pix.shape[0]})")
        if <long> (n * self.C + self.npix) * self.npad < RR_NOGIL_ELEMS:
            self.run_n(&pix[0] if n else NULL, n, threads)
        else:
            with nogil:
                self.run_n(&pix[0] if n else NULL, n, threads)

    cdef void run_n(self, const int32_t *pix, int n, int threads) noexcept nogil:
        """run() for compiled callers."""
        cdef int i
        self._partials(pix, n, rr_threads_for(threads, <long> n * self.C * self.npad, RR_PAR_MACS))
        if self.act:
            for i in range(self.N):
                self.y[i] = rr_act(self.act, self.ybuf[i], self.alpha, self.beta, 0.0)
        else:
            for i in range(self.N):
                self.y[i] = self.ybuf[i]

    cdef void _partials(self, const int32_t *pix, int n, int nt) noexcept nogil:
        cdef int i, p, b
        cdef int ncol = (self.npad + 31) // 32
        if nt == 1:
            for i in range(n):
                p = pix[i]
                rr_gemm_pixel_partial(self.x + <size_t> p * self.ldx, self.C,
                                      self.w + <size_t> p * self.C * self.npad, self.npad, self.blocked,
                                      self.partial + <size_t> p * self.npad)
        elif n < 2 * nt:
            # few pixels (a classifier after a global pool: one): the threads share each
            # pixel's output columns, so the weights stream through both cores
            for i in range(n):
                p = pix[i]
                for b in prange(ncol, num_threads=nt, schedule="dynamic"):
                    rr_gemm_pixel_cols(self.x + <size_t> p * self.ldx, self.C,
                                       self.w + <size_t> p * self.C * self.npad, self.npad, self.blocked,
                                       self.partial + <size_t> p * self.npad, b * 32, min(b * 32 + 32, self.npad))
        else:
            for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=8):
                p = pix[i]
                rr_gemm_pixel_partial(self.x + <size_t> p * self.ldx, self.C,
                                      self.w + <size_t> p * self.C * self.npad, self.npad, self.blocked,
                                      self.partial + <size_t> p * self.npad)
        rr_gemm_pixel_sum(self.partial, self.npix, self.npad, self.bias, self.ybuf)


cdef class StackSumKernel(Kernel):
    """y = act(sum of k partial convs + bias) at listed pixels, for convs split by input group."""
    cdef object keep
    cdef const float *partials
    cdef size_t stride
    cdef int k, C, ldy, act
    cdef float alpha, beta
    cdef const float *bias
    cdef float *y

    def __init__(self, partials, y_buf, int y_off, bias, int act, float alpha, float beta):
        """partials: (k, OH, OW, C) float32."""
        self.k, self.C = partials.shape[0], partials.shape[3]
        self.stride = <size_t> partials.shape[1] * partials.shape[2] * self.C
        bias = np.ascontiguousarray(bias, np.float32)
        self.keep = (partials, y_buf, bias)
        self.partials = fptr(partials)
        self.y = fptr(y_buf) + y_off
        self.ldy = y_buf.shape[2]
        self.bias = fptr(bias)
        self.act, self.alpha, self.beta = act, alpha, beta

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        self.y = <float *> reloc(self.y, moves)

    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mp, float thr, int threads) except -1 nogil:
        cdef int nt = rr_threads_for(threads, <long> n * self.k * self.C, RR_PAR_ELEMS), i
        if nt == 1:
            for i in range(n):
                _stack_sum(self, pix[i], mp, thr)
        else:
            for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=32):
                _stack_sum(self, pix[i], mp, thr)
        return 0


cdef inline void _stack_sum(StackSumKernel k, int p, uint8_t *mp, float thr) noexcept nogil:
    cdef int changed = 0
    rr_stack_sum_pixel(k.partials + <size_t> p * k.C, k.stride, k.k, k.C, k.bias, k.act, k.alpha, k.beta,
                       k.y + <size_t> p * k.ldy, thr, &changed)
    if changed and mp != NULL:
        mp[p] = 1
