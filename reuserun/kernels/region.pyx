# Change detection and region bookkeeping on per-pixel uint8 masks (what changed; the
# planner in reuserun/plan decides what to do with it).
from cython.parallel cimport prange
from libc.math cimport isfinite
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memset
import numpy as np

from reuserun.kernels.common cimport rr_differs, rr_num_threads


def diff_frame(const float[:, ::1] frame, const float[:, ::1] ref, float thr, uint8_t[::1] mask,
               int threads):
    """Mark pixels where the (C, HW) frame differs from its (C, HW) reference by more than thr
    (thr == 0: any bit differs). Reads only: returns (changed pixels, non-finite values)."""
    cdef int C = frame.shape[0], npix = frame.shape[1]
    cdef int b, p, c, p0, p1, nt = rr_num_threads(threads)
    cdef int nblocks = (npix + 1023) // 1024
    cdef long changed = 0, bad = 0
    cdef const uint32_t *fb = <const uint32_t *> &frame[0, 0]
    cdef const uint32_t *rb = <const uint32_t *> &ref[0, 0]
    cdef const float *ff = &frame[0, 0]
    cdef const float *rf = &ref[0, 0]
    cdef uint8_t *m = &mask[0]
    with nogil:
        for b in prange(nblocks, num_threads=nt if npix > 16384 else 1, schedule="static"):
            p0 = b * 1024
            p1 = min(p0 + 1024, npix)
            memset(m + p0, 0, p1 - p0)
            for c in range(C):
                # plain loops over contiguous planes, so the compiler vectorises them
                for p in range(p0, p1):
                    bad += (fb[<Py_ssize_t> c * npix + p] & 0x7f800000u) == 0x7f800000u
                if thr == 0.0:
                    for p in range(p0, p1):
                        m[p] |= fb[<Py_ssize_t> c * npix + p] != rb[<Py_ssize_t> c * npix + p]
                else:
                    for p in range(p0, p1):
                        m[p] |= rr_differs(ff[<Py_ssize_t> c * npix + p], rf[<Py_ssize_t> c * npix + p], thr)
            for p in range(p0, p1):
                changed += m[p]
    return changed, bad


def apply_frame(const float[:, ::1] frame, float[:, ::1] ref, float[:, :, ::1] buf, int off,
                float thr, const uint8_t[::1] mask, int threads):
    """Write the marked pixels of the (C, HW) frame into its (C, HW) reference and its cache
    buffer (H, W, Ctot); under a threshold only the elements that moved by more than it, so
    every element keeps its last propagated value."""
    cdef int C = frame.shape[0], npix = frame.shape[1], W = buf.shape[1]
    cdef int p, c, nt = rr_num_threads(threads)
    cdef float f
    with nogil:
        for p in prange(npix, num_threads=nt if npix > 16384 else 1, schedule="static"):
            if mask[p]:
                for c in range(C):
                    f = frame[c, p]
                    if rr_differs(f, ref[c, p], thr):
                        ref[c, p] = f
                        buf[p // W, p % W, off + c] = f


def reach(const uint8_t[::1] src, int H, int W, uint8_t[::1] dst, int OH, int OW,
          const int32_t[::1] ylo, const int32_t[::1] yhi,
          const int32_t[::1] xlo, const int32_t[::1] xhi, uint8_t[::1] tmp):
    """dst[oy, ox] |= any(src[ylo[oy]..yhi[oy], xlo[ox]..xhi[ox]]) (inclusive, clipped ranges,
    empty when lo > hi). tmp needs OH * W bytes. Returns the number of marked dst pixels."""
    cdef int oy, ox, iy, x, lo, hi
    cdef long count = 0
    cdef uint8_t v
    with nogil:
        for oy in range(OH):
            memset(&tmp[oy * W], 0, W)
            lo = max(ylo[oy], 0)
            hi = min(yhi[oy], H - 1)
            for iy in range(lo, hi + 1):
                for x in range(W):
                    tmp[oy * W + x] |= src[iy * W + x]
        for oy in range(OH):
            for ox in range(OW):
                if dst[oy * OW + ox]:
                    count += 1
                    continue
                lo = max(xlo[ox], 0)
                hi = min(xhi[ox], W - 1)
                v = 0
                for x in range(lo, hi + 1):
                    if tmp[oy * W + x]:
                        v = 1
                        break
                dst[oy * OW + ox] = v
                count += v
    return count


def bbox(const uint8_t[::1] mask, int H, int W):
    """(y0, y1, x0, x1), half-open, of the marked pixels, or None."""
    cdef int y, x, y0 = H, y1 = -1, x0 = W, x1 = -1
    with nogil:
        for y in range(H):
            for x in range(W):
                if mask[y * W + x]:
                    if y < y0: y0 = y
                    y1 = y
                    if x < x0: x0 = x
                    if x > x1: x1 = x
    if y1 < 0:
        return None
    return (y0, y1 + 1, x0, x1 + 1)


def fill_rect(uint8_t[::1] mask, int W, int y0, int y1, int x0, int x1):
    cdef int y
    with nogil:
        for y in range(y0, y1):
            memset(&mask[y * W + x0], 1, x1 - x0)


def tiles(const uint8_t[::1] src, int H, int W, int T, uint8_t[::1] dst):
    """dst = src coarsened to a T x T grid: every tile holding a marked pixel is marked whole."""
    cdef int gy, gx, ty, tx, y, x, y1, x1, hit
    cdef int GH = (H + T - 1) // T, GW = (W + T - 1) // T
    with nogil:
        for gy in range(GH):
            ty = gy * T
            y1 = min(ty + T, H)
            for gx in range(GW):
                tx = gx * T
                x1 = min(tx + T, W)
                hit = 0
                for y in range(ty, y1):
                    for x in range(tx, x1):
                        if src[y * W + x]:
                            hit = 1
                            break
                    if hit:
                        break
                for y in range(ty, y1):
                    memset(&dst[y * W + tx], hit, x1 - tx)


def components(const uint8_t[::1] src, int H, int W, int T):
    """Bounding boxes (y0, y1, x0, x1) of the 8-connected groups of marked T x T tiles,
    each shrunk to the marked pixels it holds."""
    cdef int GH = (H + T - 1) // T, GW = (W + T - 1) // T
    cdef int32_t[::1] label = np.full(GH * GW, -1, np.int32)
    cdef int32_t[::1] stack = np.empty(GH * GW, np.int32)
    cdef uint8_t[::1] occ = np.zeros(GH * GW, np.uint8)
    cdef int ty, tx, y, x, t, sp, cur, ny, nx, dy, dx, ncomp = 0
    for y in range(H):
        for x in range(W):
            if src[y * W + x]:
                occ[(y // T) * GW + x // T] = 1
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
            ty, tx = cur // GW, cur % GW
            for y in range(ty * T, min(ty * T + T, H)):
                for x in range(tx * T, min(tx * T + T, W)):
                    if src[y * W + x]:
                        by0 = min(by0, y); by1 = max(by1, y)
                        bx0 = min(bx0, x); bx1 = max(bx1, x)
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    ny, nx = ty + dy, tx + dx
                    if 0 <= ny < GH and 0 <= nx < GW and occ[ny * GW + nx] and label[ny * GW + nx] < 0:
                        label[ny * GW + nx] = ncomp
                        stack[sp] = ny * GW + nx
                        sp += 1
        boxes.append((by0, by1 + 1, bx0, bx1 + 1))
        ncomp += 1
    return boxes


def to_pixels(const uint8_t[::1] mask, int n, int32_t[::1] pix):
    """Indices of the marked entries of mask[:n] into pix; returns their count."""
    cdef int i, k = 0
    with nogil:
        for i in range(n):
            if mask[i]:
                pix[k] = i
                k += 1
    return k


def count(const uint8_t[::1] mask, int n):
    cdef int i
    cdef long k = 0
    with nogil:
        for i in range(n):
            k += mask[i]
    return k


def to_channels_first(const float[:, :, ::1] buf, int off, int C, const uint8_t[::1] mask,
                      float[:, ::1] out, int threads):
    """out[c, p] = buf[p, off + c] for the marked pixels p (all of them when mask is None):
    keeps a CHW mirror of a cached output up to date at the cost of what changed."""
    cdef int npix = buf.shape[0] * buf.shape[1], ld = buf.shape[2]
    cdef int b, p, c, p0, p1, nt = rr_num_threads(threads)
    cdef int nblocks = (npix + 63) // 64
    cdef bint every = mask is None
    cdef const uint8_t *m = NULL if every else &mask[0]
    cdef const float *src = &buf[0, 0, 0] + off
    cdef float *dst = &out[0, 0]
    with nogil:
        for b in prange(nblocks, num_threads=nt if npix > 4096 else 1, schedule="static"):
            p0 = b * 64
            p1 = min(p0 + 64, npix)
            for p in range(p0, p1):
                if every or m[p]:
                    for c in range(C):
                        dst[<Py_ssize_t> c * npix + p] = src[<Py_ssize_t> p * ld + c]


def to_channels_last(const float[:, :, ::1] frame, float[:, :, ::1] buf, int off, int threads):
    """buf[y, x, off + c] = frame[c, y, x]: a whole frame into its cache."""
    cdef int C = frame.shape[0], H = frame.shape[1], W = frame.shape[2], y, x, c
    cdef int nt = rr_num_threads(threads)
    with nogil:
        for y in prange(H, num_threads=nt if H * W > 4096 else 1, schedule="static"):
            for x in range(W):
                for c in range(C):
                    buf[y, x, off + c] = frame[c, y, x]


def all_finite(const float[::1] a):
    """True when no element is NaN or Inf."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef int bad = 0
    with nogil:
        for i in range(n):
            if not isfinite(a[i]):
                bad = 1
                break
    return not bad
