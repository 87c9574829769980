# Change detection and region bookkeeping on per-pixel uint8 masks (what changed; the
# planner in reuserun/plan decides what to do with it).
from cython.parallel cimport prange
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcmp, memcpy, memmove, memset
import numpy as np

from reuserun.kernels.common cimport RR_PAR_FRAME_ELEMS, RR_SHARES_PER_THREAD, rr_differs, rr_num_threads

cdef extern from "rr_region.h" nogil:
    uint32_t rr_mark_diff_count_nonfinite(const uint32_t *f, const uint32_t *r, uint8_t *m, long n, int first)
    uint32_t rr_count_nonfinite(const uint32_t *f, long n)
    uint32_t rr_count_nonzero(const uint8_t *m, long n)
    void rr_or_marks(uint8_t *dst, const uint8_t *src, long n)
    void rr_apply_rows(const float *f, float *ref, float *buf, long ldb, const uint8_t *m, long p0, long p1,
                       long npix, int C, float thr)


def diff_frame(const float[:, ::1] frame, const float[:, ::1] ref, float thr, uint8_t[::1] mask,
               int threads):
    """Mark pixels where the (C, HW) frame differs from its (C, HW) reference by more than thr
    (thr == 0: any bit differs). Reads only: returns (changed pixels, non-finite values)."""
    cdef int C = frame.shape[0], npix = frame.shape[1]
    cdef int b, nt = rr_num_threads(threads)
    cdef int nblocks = (npix + 1023) // 1024
    cdef long changed = 0, bad = 0, block_bad
    cdef const uint32_t *fb = <const uint32_t *> &frame[0, 0]
    cdef const uint32_t *rb = <const uint32_t *> &ref[0, 0]
    cdef uint8_t *m = &mask[0]
    cdef int ns = nt * RR_SHARES_PER_THREAD
    with nogil:
        if nt > 1 and <long> npix * C > RR_PAR_FRAME_ELEMS:
            for b in prange(ns, num_threads=nt, schedule="dynamic"):
                block_bad = 0
                changed += _diff_block(fb, rb, m, C, npix, <int> (<long> npix * b // ns), <int> (<long> npix * (b + 1) // ns), thr, &block_bad)
                bad += block_bad
        else:  # no parallel region: entering one costs about a microsecond even alone
            for b in range(nblocks):
                changed += _diff_block(fb, rb, m, C, npix, b * 1024, min(b * 1024 + 1024, npix), thr, &bad)
    return changed, bad


cdef inline long _diff_block(const uint32_t *fb, const uint32_t *rb, uint8_t *m, int C, int npix, int p0, int p1,
                             float thr, long *bad) noexcept nogil:
    """diff_frame for pixels p0..p1: marks them, adds their non-finite values to *bad, returns
    their marks."""
    cdef int c, p
    cdef const float *ff = <const float *> fb
    cdef const float *rf = <const float *> rb
    if thr != 0.0:
        memset(m + p0, 0, p1 - p0)
    for c in range(C):
        if thr == 0.0:
            bad[0] += rr_mark_diff_count_nonfinite(fb + <Py_ssize_t> c * npix + p0, rb + <Py_ssize_t> c * npix + p0,
                                                   m + p0, p1 - p0, c == 0)
        else:
            bad[0] += rr_count_nonfinite(fb + <Py_ssize_t> c * npix + p0, p1 - p0)
            for p in range(p0, p1):
                m[p] |= rr_differs(ff[<Py_ssize_t> c * npix + p], rf[<Py_ssize_t> c * npix + p], thr)
    return rr_count_nonzero(m + p0, p1 - p0)


def diff_planes(const float[:, ::1] frame, const float[:, ::1] ref, float thr, uint8_t[:, ::1] planes,
                int threads):
    """Per channel: mark the pixels where the (C, HW) frame differs from its reference (thr as in
    diff_frame), for inputs whose channels change independently (frame stacks)."""
    cdef int C = frame.shape[0], npix = frame.shape[1], c, p
    cdef int nt = rr_num_threads(threads)
    with nogil:
        if nt > 1 and <long> npix * C > RR_PAR_FRAME_ELEMS:
            for c in prange(C, num_threads=nt, schedule="dynamic"):
                for p in range(npix):
                    planes[c, p] = rr_differs(frame[c, p], ref[c, p], thr)
        else:
            for c in range(C):
                for p in range(npix):
                    planes[c, p] = rr_differs(frame[c, p], ref[c, p], thr)


def apply_frame(const float[:, ::1] frame, float[:, ::1] ref, float[:, :, ::1] buf, int off,
                float thr, const uint8_t[::1] mask, int threads, long lo=0, long hi=-1):
    """Write the marked pixels of the (C, HW) frame into its (C, HW) reference and its cache
    buffer (H, W, Ctot); under a threshold only the elements that moved by more than it, so
    every element keeps its last propagated value; thr < 0: every marked element, whatever the
    reference holds (a reference that slid holds stale values where a shift exposed it).
    lo, hi: the flat pixel range holding every mark (hi < 0: the end)."""
    cdef int C = frame.shape[0], npix = frame.shape[1], b, nt = rr_num_threads(threads)
    if hi < 0 or hi > npix:
        hi = npix
    cdef int nblocks = (hi - lo + 1023) // 1024 if hi > lo else 0
    cdef long ldb = buf.shape[2]
    cdef const float *f = &frame[0, 0]
    cdef float *r = &ref[0, 0]
    cdef float *y = &buf[0, 0, 0] + off
    cdef const uint8_t *m = &mask[0]
    with nogil:
        if nt > 1 and (hi - lo) * C > RR_PAR_FRAME_ELEMS:
            for b in prange(nblocks, num_threads=nt, schedule="dynamic"):
                rr_apply_rows(f, r, y, ldb, m, lo + <long> b * 1024, min(lo + <long> b * 1024 + 1024, hi), npix, C, thr)
        else:
            for b in range(nblocks):
                rr_apply_rows(f, r, y, ldb, m, lo + <long> b * 1024, min(lo + <long> b * 1024 + 1024, hi), npix, C, thr)



def gather_pixels(const float[:, ::1] frame, const int32_t[::1] pix, long n, float[:, ::1] out):
    """out[i, c] = frame[c, pix[i]] for i < n: a (C, HW) frame's listed pixels, one row each (as
    the cache holds them). Returns how many of those values are NaN or Inf."""
    cdef int C = frame.shape[0], c
    cdef long i, bad = 0
    cdef float v
    if n > pix.shape[0] or n > out.shape[0] or out.shape[1] < C:
        raise ValueError("gather_pixels: the pixel list or the output is too short")
    with nogil:
        for i in range(n):
            for c in range(C):
                v = frame[c, pix[i]]
                out[i, c] = v
                bad += not isfinite(v)
    return bad


def mark_boxes(uint8_t[::1] mask, int H, int W, boxes):
    """Mark the boxes (y0, y1, x0, x1) of an H x W mask, everything else zero (a variant's
    declared edit). Returns the box bounding them, or None when they cover nothing. A box
    outside the grid raises ValueError before the mask is touched."""
    cdef int y0, y1, x0, x1, b0 = H, b1 = 0, b2 = W, b3 = 0, y
    cdef list ints = []
    if mask.shape[0] != <Py_ssize_t> H * W:
        raise ValueError("mark_boxes: the mask is not H x W")
    for b in boxes:
        y0, y1, x0, x1 = b
        if not (0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
            raise ValueError(f"box {tuple(b)} lies outside the {H}x{W} grid")
        if y0 < y1 and x0 < x1:
            ints.append((y0, y1, x0, x1))
    memset(&mask[0], 0, mask.shape[0])
    for y0, y1, x0, x1 in ints:
        for y in range(y0, y1):
            memset(&mask[y * W + x0], 1, x1 - x0)
        b0, b1, b2, b3 = min(b0, y0), max(b1, y1), min(b2, x0), max(b3, x1)
    return (b0, b1, b2, b3) if ints else None


cdef inline void _no_box(int *t, int y1, int x1) noexcept nogil:
    """An empty inclusive box (first row, last row, first column, last column) that _take_in
    widens, for a scan of rows before y1 and columns before x1."""
    t[0], t[1], t[2], t[3] = y1, -1, x1, -1


cdef inline void _take_in(int *t, int y, int x) noexcept nogil:
    """Widen the box t to hold (y, x), the scan going row by row."""
    if y < t[0]:
        t[0] = y
    t[1] = y
    if x < t[2]:
        t[2] = x
    if x > t[3]:
        t[3] = x


def take_marked(const uint8_t[::1] mask, int W, int y0, int y1, int x0, int x1, const float[:, ::1] frame,
                int32_t[::1] pix, float[:, ::1] vals):
    """The marked pixels inside the box, in one pass: their flat indices into pix (row by row),
    their values from the (C, H*W) frame into rows of vals. Returns (count, the box bounding
    them or None, how many of the values are NaN or Inf)."""
    cdef int C = frame.shape[0], c, y, x
    cdef int t[4]
    cdef long k = 0, bad = 0, p
    cdef float v
    _no_box(t, y1, x1)
    if y0 < 0 or y1 * W > mask.shape[0] or x0 < 0 or x1 > W or vals.shape[1] < C or frame.shape[1] != mask.shape[0]:
        raise ValueError("take_marked: the box, the frame or the values do not fit the mask")
    if y0 < y1 and (<long> (y1 - y0)) * (x1 - x0) > min(pix.shape[0], vals.shape[0]):
        raise ValueError("take_marked: the pixel list or the values are too short for the box")
    # holding the GIL: a patch's pixels take a microsecond, and a released GIL can go
    # to another variant worker's Python, which this one would then wait for
    for y in range(y0, y1):
        for x in range(x0, x1):
            p = <long> y * W + x
            if mask[p]:
                pix[k] = p
                for c in range(C):
                    v = frame[c, p]
                    vals[k, c] = v
                    bad += not isfinite(v)
                k += 1
                _take_in(t, y, x)
    if k == 0:
        return 0, None, 0
    return k, (t[0], t[1] + 1, t[2], t[3] + 1), bad


def scatter_pixels(const float[:, ::1] vals, const int32_t[::1] pix, long n, float[:, :, ::1] buf, int off):
    """Pixel pix[i] of the (H, W, Ctot) cache, channels off.., takes row i of vals, for i < n."""
    cdef int C = vals.shape[1], c
    cdef long i, ld = buf.shape[2]
    cdef float *y = &buf[0, 0, 0] + off
    if n > pix.shape[0] or n > vals.shape[0] or off + C > ld:
        raise ValueError("scatter_pixels: the pixel list or the values are too short")
    # holding the GIL: a patch's pixels take a microsecond, and a released GIL can go
    # to another variant worker's Python, which this one would then wait for
    for i in range(n):
        for c in range(C):
            y[pix[i] * ld + c] = vals[i, c]

# Boxes are (y0, y1, x0, x1), half-open, in the mask's own grid. Every function below touches
# only its box, so the bookkeeping of a frame costs what its change covers, not the image size.

def reach(const uint8_t[::1] src, int W, int sy0, int sy1, int sx0, int sx1,
          uint8_t[::1] dst, int OW, int y0, int y1, int x0, int x1,
          const int32_t[::1] ylo, const int32_t[::1] yhi,
          const int32_t[::1] xlo, const int32_t[::1] xhi, uint8_t[::1] tmp):
    """Within the output box: dst[oy, ox] = any(src[ylo[oy]..yhi[oy], xlo[ox]..xhi[ox]])
    (inclusive ranges, clipped to the source box where src may be marked). tmp needs OH * W
    bytes. Returns the number of marked dst pixels."""
    cdef int oy, ox, iy, x, lo, hi
    cdef long count = 0
    cdef uint8_t v
    with nogil:
        for oy in range(y0, y1):
            memset(&tmp[oy * W + sx0], 0, sx1 - sx0)
            lo = max(ylo[oy], sy0)
            hi = min(yhi[oy], sy1 - 1)
            for iy in range(lo, hi + 1):
                for x in range(sx0, sx1):
                    tmp[oy * W + x] |= src[iy * W + x]
            for ox in range(x0, x1):
                lo = max(xlo[ox], sx0)
                hi = min(xhi[ox], sx1 - 1)
                v = 0
                for x in range(lo, hi + 1):
                    if tmp[oy * W + x]:
                        v = 1
                        break
                dst[oy * OW + ox] = v
                count += v
    return count


def scan(const uint8_t[::1] mask, int W, int y0, int y1, int x0, int x1):
    """(count, tight box or None) of the marked pixels inside the box."""
    cdef int y, x
    cdef int t[4]
    cdef long n = 0
    _no_box(t, y1, x1)
    with nogil:
        for y in range(y0, y1):
            for x in range(x0, x1):
                if mask[y * W + x]:
                    n += 1
                    _take_in(t, y, x)
    if n == 0:
        return 0, None
    return n, (t[0], t[1] + 1, t[2], t[3] + 1)


def add_boxes(double[:, ::1] out, const int64_t[:, ::1] boxes, const double[::1] values):
    """out[y0:y1, x0:x1] += values[i] for each box i (y0, y1, x0, x1), in order (an occlusion
    map's sum over the windows covering each pixel)."""
    cdef Py_ssize_t i, y, x
    if boxes.shape[0] != values.shape[0] or boxes.shape[1] != 4:
        raise ValueError("add_boxes: one (y0, y1, x0, x1) box per value")
    for i in range(boxes.shape[0]):
        if not (0 <= boxes[i, 0] <= boxes[i, 1] <= out.shape[0] and 0 <= boxes[i, 2] <= boxes[i, 3] <= out.shape[1]):
            raise ValueError(f"add_boxes: box {tuple(boxes[i])} lies outside the {out.shape[0]}x{out.shape[1]} grid")
    with nogil:
        for i in range(boxes.shape[0]):
            for y in range(boxes[i, 0], boxes[i, 1]):
                for x in range(boxes[i, 2], boxes[i, 3]):
                    out[y, x] += values[i]


def fill(uint8_t[::1] mask, int W, int y0, int y1, int x0, int x1, int value):
    cdef int y
    with nogil:
        for y in range(y0, y1):
            memset(&mask[y * W + x0], value, x1 - x0)


def copy_box(const uint8_t[::1] src, uint8_t[::1] dst, int W, int y0, int y1, int x0, int x1):
    cdef int y
    with nogil:
        for y in range(y0, y1):
            memcpy(&dst[y * W + x0], &src[y * W + x0], x1 - x0)


def or_box(uint8_t[::1] dst, const uint8_t[::1] src, int W, int y0, int y1, int x0, int x1):
    cdef int y
    with nogil:
        for y in range(y0, y1):
            rr_or_marks(&dst[y * W + x0], &src[y * W + x0], x1 - x0)


def tiles(const uint8_t[::1] src, int H, int W, int T, uint8_t[::1] dst, int y0, int y1, int x0, int x1):
    """Within the box grown to the T x T grid: every tile holding a marked pixel is marked
    whole in dst. Returns the grown box."""
    cdef int gy, gx, ty, tx, y, x, ty1, tx1, hit
    cdef int gy0 = y0 // T, gy1 = (y1 + T - 1) // T, gx0 = x0 // T, gx1 = (x1 + T - 1) // T
    with nogil:
        for gy in range(gy0, gy1):
            ty = gy * T
            ty1 = min(ty + T, H)
            for gx in range(gx0, gx1):
                tx = gx * T
                tx1 = min(tx + T, W)
                hit = 0
                for y in range(ty, ty1):
                    for x in range(tx, tx1):
                        if src[y * W + x]:
                            hit = 1
                            break
                    if hit:
                        break
                for y in range(ty, ty1):
                    memset(&dst[y * W + tx], hit, tx1 - tx)
    return (gy0 * T, min(gy1 * T, H), gx0 * T, min(gx1 * T, W))


def components(const uint8_t[::1] src, int H, int W, int T, int y0, int y1, int x0, int x1):
    """Bounding boxes (y0, y1, x0, x1) of the 8-connected groups of marked T x T tiles inside
    the box, each shrunk to the marked pixels it holds."""
    cdef int gy0 = y0 // T, gx0 = x0 // T
    cdef int GH = (y1 + T - 1) // T - gy0, GW = (x1 + T - 1) // T - gx0
    cdef int32_t[::1] label = np.full(GH * GW, -1, np.int32)
    cdef int32_t[::1] stack = np.empty(GH * GW, np.int32)
    cdef uint8_t[::1] occ = np.zeros(GH * GW, np.uint8)
    cdef int ty, tx, y, x, t, sp, cur, ny, nx, dy, dx, ncomp = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if src[y * W + x]:
                occ[(y // T - gy0) * GW + x // T - gx0] = 1
    boxes = []
    cdef int by0, by1, bx0, bx1
    for t in range(GH * GW):
        if not occ[t] or label[t] >= 0:
            continue
        by0, by1, bx0, bx1 = H, -1, W, -1
        label[t] = ncomp
        stack[0] = t
        sp = 1
        while sp:
            sp -= 1
            cur = stack[sp]
            ty, tx = cur // GW + gy0, cur % GW + gx0
            for y in range(ty * T, min(ty * T + T, H)):
                for x in range(tx * T, min(tx * T + T, W)):
                    if src[y * W + x]:
                        by0 = min(by0, y); by1 = max(by1, y)
                        bx0 = min(bx0, x); bx1 = max(bx1, x)
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    ny, nx = ty - gy0 + dy, tx - gx0 + dx
                    if 0 <= ny < GH and 0 <= nx < GW and occ[ny * GW + nx] and label[ny * GW + nx] < 0:
                        label[ny * GW + nx] = ncomp
                        stack[sp] = ny * GW + nx
                        sp += 1
        boxes.append((by0, by1 + 1, bx0, bx1 + 1))
        ncomp += 1
    return boxes


def to_pixels(const uint8_t[::1] mask, int W, int y0, int y1, int x0, int x1, int32_t[::1] pix):
    """Flat indices of the marked pixels inside the box, row by row; returns their count."""
    cdef int y, x, k = 0
    with nogil:
        for y in range(y0, y1):
            for x in range(x0, x1):
                if mask[y * W + x]:
                    pix[k] = y * W + x
                    k += 1
    return k


def to_channels_first(const float[:, :, ::1] buf, int off, int C, const uint8_t[::1] mask,
                      float[:, ::1] out, int threads, int p_lo=0, int p_hi=-1):
    """out[c, p] = buf[p, off + c] for the marked pixels p in [p_lo, p_hi) (all of them when
    mask is None): keeps a CHW mirror of a cached output up to date at the cost of what changed."""
    cdef int npix = buf.shape[0] * buf.shape[1], ld = buf.shape[2]
    cdef int b, nt = rr_num_threads(threads)
    if p_hi < 0:
        p_hi = npix
    cdef int nblocks = (p_hi - p_lo + 63) // 64
    cdef bint every = mask is None
    cdef const uint8_t *m = NULL if every else &mask[0]
    cdef const float *src = &buf[0, 0, 0] + off
    cdef float *dst = &out[0, 0]
    with nogil:
        if every and C == 1 and ld == 1:  # a one-channel output, unsliced: the same bytes
            memcpy(dst + p_lo, src + p_lo, <size_t> (p_hi - p_lo) * sizeof(float))
        elif nt > 1 and <long> (p_hi - p_lo) * C > RR_PAR_FRAME_ELEMS:
            for b in prange(nblocks, num_threads=nt, schedule="dynamic"):
                _to_channels_first(src, dst, m, ld, C, npix, p_lo + b * 64, min(p_lo + b * 64 + 64, p_hi))
        else:
            _to_channels_first(src, dst, m, ld, C, npix, p_lo, p_hi)


cdef inline void _to_channels_first(const float *src, float *dst, const uint8_t *m, int ld, int C, int npix,
                                    int p0, int p1) noexcept nogil:
    """to_channels_first for pixels p0..p1 (every one when m is NULL). Every pixel: in blocks of
    64 pixels, channel by channel, so each store runs along one plane while the block's input
    stays in L1 (pixel by pixel, each store went to another plane: 10.6 ms for a 21-channel
    512x512 output, 2.6-2.9 ms this way)."""
    cdef int p, c, b0, b1
    if m == NULL:
        for b0 in range(p0, p1, 64):
            b1 = min(b0 + 64, p1)
            for c in range(C):
                for p in range(b0, b1):
                    dst[<Py_ssize_t> c * npix + p] = src[<Py_ssize_t> p * ld + c]
        return
    for p in range(p0, p1):
        if m[p]:
            for c in range(C):
                dst[<Py_ssize_t> c * npix + p] = src[<Py_ssize_t> p * ld + c]


def to_channels_last(const float[:, :, ::1] frame, float[:, :, ::1] buf, int off, int threads):
    """buf[y, x, off + c] = frame[c, y, x]: a whole frame into its cache."""
    cdef int C = frame.shape[0], H = frame.shape[1], W = frame.shape[2], nt = rr_num_threads(threads)
    cdef int ld = buf.shape[2]
    cdef long npix = <long> H * W, b, nblocks = (npix + 63) // 64
    cdef const float *src = &frame[0, 0, 0]
    cdef float *dst = &buf[0, 0, 0] + off
    with nogil:
        if ld == 1:  # one plane into an unsliced buffer: the same bytes
            memcpy(dst, src, <size_t> npix * sizeof(float))
        elif nt > 1 and npix * C > RR_PAR_FRAME_ELEMS:
            for b in prange(nblocks, num_threads=nt, schedule="static"):
                _block_to_channels_last(src, dst, C, npix, ld, b * 64, min(b * 64 + 64, npix))
        else:
            for b in range(nblocks):
                _block_to_channels_last(src, dst, C, npix, ld, b * 64, min(b * 64 + 64, npix))


cdef inline void _block_to_channels_last(const float *src, float *dst, int C, long npix, int ld,
                                         long p0, long p1) noexcept nogil:
    """Pixels p0..p1 (at most 64), plane by plane: the block's rows of the buffer stay in L1
    while every plane adds its channel (a plane at a time over a whole row sent each store to
    another cache line and, for long rows, out of cache)."""
    cdef int c
    cdef long p
    cdef const float *s
    for c in range(C):
        s = src + <size_t> c * npix
        for p in range(p0, p1):
            dst[<size_t> p * ld + c] = s[p]


def same_bytes(const uint8_t[::1] a, const uint8_t[::1] b):
    """Whether two byte buffers of one length hold the same bytes."""
    if a.shape[0] != b.shape[0]:
        return False
    return a.shape[0] == 0 or memcmp(&a[0], &b[0], a.shape[0]) == 0


def all_finite(const float[::1] a):
    """True when no element is NaN or Inf."""
    cdef Py_ssize_t i, j, n = a.shape[0]
    cdef const uint32_t *u = <const uint32_t *> &a[0] if n else NULL
    cdef uint32_t top = 0
    with nogil:
        # NaN and Inf are the floats whose exponent bits are all set: the largest masked
        # exponent is an integer max the compiler vectorises, checked once per block so a bad
        # frame still stops early
        for i in range(0, n, 4096):
            for j in range(i, min(i + 4096, n)):
                top = max(top, u[j] & 0x7f800000u)
            if top == 0x7f800000u:
                break
    return top != 0x7f800000u


def move(float[:, :, ::1] buf, int off, int C, int dy, int dx, int threads):
    """Shift channels off..off+C of an (H, W, Ctot) cache in place: new[y, x] = old[y + dy, x + dx]
    where that exists; the exposed band keeps what it held (it is recomputed). Rows are walked in
    the order that reads every source before it is overwritten; threads split the columns (a
    vertical move) or the rows (a horizontal one), which never depend on each other."""
    cdef int H = buf.shape[0], W = buf.shape[1], L = buf.shape[2]
    cdef int y0 = max(0, -dy), y1 = H - max(0, dy), x0 = max(0, -dx), x1 = W - max(0, dx)
    cdef int nt = rr_num_threads(threads), t, y, i, x, xa, xb, ny, nx
    if y0 >= y1 or x0 >= x1 or (dy == 0 and dx == 0):
        return
    ny, nx = y1 - y0, x1 - x0
    if dy != 0 and dx != 0 or <long> ny * nx * C < RR_PAR_FRAME_ELEMS:
        nt = 1
    nt = min(nt, nx if dy != 0 else ny)  # threads split columns (vertical) or rows (horizontal)
    cdef int ns = min(nt * RR_SHARES_PER_THREAD, nx)
    cdef float *base = &buf[0, 0, 0]
    with nogil:
        if dy != 0:
            for t in prange(ns, num_threads=nt, schedule="dynamic"):
                xa = x0 + t * nx // ns
                xb = x0 + (t + 1) * nx // ns
                for i in range(ny):
                    y = y0 + i if dy > 0 else y1 - 1 - i
                    _move_row(base, W, L, off, C, y, y + dy, xa, xb, dx)
        else:
            for y in prange(y0, y1, num_threads=nt, schedule="dynamic"):
                _move_row(base, W, L, off, C, y, y, x0, x1, dx)


cdef inline void _move_row(float *base, int W, int L, int off, int C, int ydst, int ysrc,
                           int xa, int xb, int dx) noexcept nogil:
    cdef float *d = base + (<size_t> ydst * W) * L + off
    cdef const float *s = base + (<size_t> ysrc * W) * L + off
    cdef int x, i, n = xb - xa
    if C == L:  # whole pixels: one contiguous (possibly overlapping) run
        memmove(d + <size_t> xa * L, s + <size_t> (xa + dx) * L, <size_t> n * L * sizeof(float))
        return
    for i in range(n):
        x = xa + i if dx >= 0 else xb - 1 - i
        memmove(d + <size_t> x * L, s + <size_t> (x + dx) * L, C * sizeof(float))


def diff_shifted(const float[:, ::1] frame, const float[:, ::1] ref, int H, int W, int dy, int dx,
                 uint8_t[::1] mask, int threads):
    """Mark pixels of the (C, H*W) frame whose bits differ from the reference's pixel at
    (y + dy, x + dx), and those with no such pixel (the exposed band). Returns (marked,
    non-finite values in the frame), like diff_frame for a frame that is the reference moved."""
    cdef int C = frame.shape[0], y, nt = rr_num_threads(threads)
    cdef long changed = 0, bad = 0, row_bad
    cdef const uint32_t *fb = <const uint32_t *> &frame[0, 0]
    cdef const uint32_t *rb = <const uint32_t *> &ref[0, 0]
    cdef uint8_t *m = &mask[0]
    with nogil:
        if nt == 1 or H == 1 or <long> H * W * C <= RR_PAR_FRAME_ELEMS:
            for y in range(H):
                changed += _diff_shifted_row(fb, rb, m, C, H, W, dy, dx, y, &row_bad)
                bad += row_bad
        else:
            for y in prange(H, num_threads=nt, schedule="dynamic"):
                row_bad = 0
                changed += _diff_shifted_row(fb, rb, m, C, H, W, dy, dx, y, &row_bad)
                bad += row_bad
    return changed, bad


cdef inline long _diff_shifted_row(const uint32_t *fb, const uint32_t *rb, uint8_t *mask, int C, int H, int W,
                                   int dy, int dx, int y, long *bad) noexcept nogil:
    """diff_shifted for row y: marks it, sets *bad to its non-finite values, returns its marks."""
    cdef Py_ssize_t npix = <Py_ssize_t> H * W, p = <Py_ssize_t> y * W, q = <Py_ssize_t> (y + dy) * W + dx
    cdef int xa = max(0, -dx), xb = min(W, W - dx), c
    cdef long nbad = 0
    cdef uint8_t *m = mask + p
    if y + dy < 0 or y + dy >= H or xa >= xb:
        for c in range(C):
            nbad += rr_count_nonfinite(fb + c * npix + p, W)
        bad[0] = nbad
        memset(m, 1, W)
        return W
    memset(m, 1, xa)
    memset(m + xb, 1, W - xb)
    for c in range(C):
        # the exposed columns are only checked; the others also compared, in the same pass
        nbad += rr_count_nonfinite(fb + c * npix + p, xa) + rr_count_nonfinite(fb + c * npix + p + xb, W - xb)
        nbad += rr_mark_diff_count_nonfinite(fb + c * npix + p + xa, rb + c * npix + q + xa, m + xa, xb - xa, c == 0)
    bad[0] = nbad
    return xa + (W - xb) + rr_count_nonzero(m + xa, xb - xa)
