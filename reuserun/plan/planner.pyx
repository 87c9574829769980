# Pixel-exact planning for one kernel step in one call (the auto policy's common case): which
# output positions the inputs' change masks reach, plus forced bands, as a pixel list. It does
# what reach + copy_box + to_pixels in region.pyx do, holding raw pointers bound once, because
# on small or sparse frames the per-call cost of those Python-level calls outweighs the work.
cimport numpy as cnp
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint8_t
from libc.string cimport memset
import numpy as np

from reuserun.plan.marks cimport Marks, list_marks, next_mark, rr_or_marks, run_end

cnp.import_array()


cdef inline uint8_t *u8(object a) except NULL:
    if not (cnp.PyArray_Check(a) and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ITEMSIZE(a) == 1):
        raise ValueError("masks must be C-contiguous uint8 arrays")
    return <uint8_t *> cnp.PyArray_DATA(a)


cdef inline int32_t *i32(object a) except NULL:
    if not (cnp.PyArray_Check(a) and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ITEMSIZE(a) == 4):
        raise ValueError("index arrays must be C-contiguous int32")
    return <int32_t *> cnp.PyArray_DATA(a)


cdef inline bint any_mark(const uint8_t *row, int x0, int x1) noexcept nogil:
    return next_mark(row, x0, x1) < x1


cdef inline void _or_box(uint8_t *dst, const uint8_t *src, int W, const int *b) noexcept nogil:
    """dst |= src inside the box b (y0, y1, x0, x1) of two W-wide masks."""
    cdef int y
    for y in range(b[0], b[1]):
        rr_or_marks(dst + <size_t> y * W + b[2], src + <size_t> y * W + b[2], b[3] - b[2])


cdef int first_at_least(const int32_t *a, int n, int v) noexcept nogil:
    """First index i with a[i] >= v (a non-decreasing), n when none."""
    cdef int lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef class PixelPlanner:
    """Plans one step's output pixels at pixel granularity. REACH_SAME: an output position depends
    on the same position of each input; REACH_WINDOW: on a window of input 0 given by monotone
    per-axis ranges ylo..yhi, xlo..xhi (inclusive, unclipped); REACH_ALL: on every position of
    every input (global pools), so any change reaches the whole output. dense_above: the share of
    the output beyond which the whole of it is computed."""
    def __init__(self, int kind, int OH, int OW, double dense_above, reach_mask, pix, tmp=None, ylo=None,
                 yhi=None, xlo=None, xhi=None, int in_h=0, int in_w=0):
        self.kind, self.OH, self.OW, self.dense_above = kind, OH, OW, dense_above
        rowocc = np.zeros(max(in_h, 1), np.uint8)  # which input rows hold a mark this call
        pre = np.zeros(in_w + 1, np.int32)  # running count of marked columns in one row
        self.keep = (reach_mask, pix, tmp, ylo, yhi, xlo, xhi, rowocc, pre)
        self.pre = i32(pre)
        self.reach = u8(reach_mask)
        self.pix = i32(pix)
        self.rowocc = u8(rowocc)
        if kind == REACH_WINDOW:
            self.tmp = u8(tmp)
            self.ylo, self.yhi, self.xlo, self.xhi = i32(ylo), i32(yhi), i32(xlo), i32(xhi)

    def plan(self, list inputs, bands):
        """(count, box) of the pixels written to pix: count 0 when nothing is reached, -1 when an
        input changed everywhere, npix (with pix = every pixel) when the reach covers most of
        the output (then computing it whole, comparing, is cheaper than listing it)."""
        cdef int box[4]
        for t in inputs:
            if not isinstance(t, Marks):
                raise TypeError(f"{type(t).__name__} is not a spatial tensor")
        ins = np.array([<Py_ssize_t> <PyObject *> t for t in inputs] or [0], np.intp)
        flat = np.array([v for b in bands or () for v in b] or [0], np.int32)
        cdef long n = self.plan_c(<PyObject **> cnp.PyArray_DATA(ins), len(inputs),
                                  <const int32_t *> cnp.PyArray_DATA(flat), len(bands or ()), box)
        if n <= 0:
            return n, None
        return n, (box[0], box[1], box[2], box[3])

    cdef long plan_c(self, PyObject **inputs, int nin, const int32_t *bands, int nb, int *box) noexcept nogil:
        """plan() for compiled callers, without the GIL: inputs[:nin] are the input tensors
        (Marks, borrowed), bands[4 * i:4 * i + 4] the forced boxes; the count, and the box
        written to box when positive."""
        cdef int y0 = self.OH, y1 = 0, x0 = self.OW, x1 = 0, ny = 0
        cdef int sy0 = 0, sy1 = 0, sx0 = 0, sx1 = 0, W = 0, src_single = 0
        cdef int ry0 = 0, ry1 = 0, rx0 = 0, rx1 = 0, has_reach = 0
        cdef int oy, ox, iy, x, e, lo, hi, y, i
        cdef const uint8_t *row = NULL
        cdef long count = 0
        cdef const uint8_t *src = NULL
        cdef uint8_t *r = self.reach
        cdef int v
        cdef PyObject *first = NULL
        cdef int nchanged = 0
        cdef bint solid
        for i in range(nin):
            if (<Marks> inputs[i]).nchanged:
                if (<Marks> inputs[i]).nchanged == <long> (<Marks> inputs[i]).H * (<Marks> inputs[i]).W:
                    return -1
                nchanged += 1
                if first == NULL:
                    first = inputs[i]
        if nchanged == 0 and nb == 0:
            return 0
        if self.kind == REACH_ALL:
            return -1
        if self.kind == REACH_SAME:
            for i in range(nin):
                if (<Marks> inputs[i]).nchanged:
                    y0 = min(y0, (<Marks> inputs[i]).b[0])
                    y1 = max(y1, (<Marks> inputs[i]).b[1])
                    x0 = min(x0, (<Marks> inputs[i]).b[2])
                    x1 = max(x1, (<Marks> inputs[i]).b[3])
            src_single = nchanged == 1 and nb == 0
        else:
            if first != NULL:
                sy0, sy1, sx0, sx1 = (<Marks> first).b[0], (<Marks> first).b[1], (<Marks> first).b[2], (<Marks> first).b[3]
                W = (<Marks> first).W
                src = (<Marks> first).m
                ry0 = first_at_least(self.yhi, self.OH, sy0)
                ry1 = first_at_least(self.ylo, self.OH, sy1)  # first with ylo > sy1 - 1
                rx0 = first_at_least(self.xhi, self.OW, sx0)
                rx1 = first_at_least(self.xlo, self.OW, sx1)
                has_reach = ry0 < ry1 and rx0 < rx1
                if has_reach:
                    y0, y1, x0, x1 = ry0, ry1, rx0, rx1
        for i in range(nb):
            y0, y1 = min(y0, bands[4 * i]), max(y1, bands[4 * i + 1])
            x0, x1 = min(x0, bands[4 * i + 2]), max(x1, bands[4 * i + 3])
        if y0 >= y1 or x0 >= x1:
            return 0
        solid = (nb == 0 and nchanged == 1 and (self.kind == REACH_SAME or has_reach)
                 and (<Marks> first).nchanged == <long> ((<Marks> first).b[1] - (<Marks> first).b[0])
                 * ((<Marks> first).b[3] - (<Marks> first).b[2]))
        if solid:
            # one change box, every position in it marked: it reaches a whole box, listed
            # without building or scanning a reach mask (occlusion patches, sliding windows)
            for y in range(y0, y1):
                for x in range(x0, x1):
                    self.pix[count] = y * self.OW + x
                    count += 1
            return self._finish(count, y0, y1, x0, x1, box)
        if src_single:
            r = (<Marks> first).m
        else:
            for y in range(y0, y1):
                memset(r + <size_t> y * self.OW + x0, 0, x1 - x0)
            if self.kind == REACH_SAME:
                for i in range(nin):
                    if not (<Marks> inputs[i]).nchanged:
                        continue
                    _or_box(r, (<Marks> inputs[i]).m, self.OW, (<Marks> inputs[i]).b)
            elif has_reach:
                # rows without a mark: a change box spanning both edges (a shifted frame's
                # border and exposed bands) then costs one scan, not a window per row
                for iy in range(sy0, sy1):
                    self.rowocc[iy] = any_mark(src + <size_t> iy * W, sx0, sx1)
                for oy in range(ry0, ry1):
                    lo = max(self.ylo[oy], sy0)
                    hi = min(self.yhi[oy], sy1 - 1)
                    memset(r + <size_t> oy * self.OW + rx0, 0, rx1 - rx0)
                    v = 0
                    for iy in range(lo, hi + 1):
                        v += self.rowocc[iy]
                    if not v:
                        continue
                    if v == 1:  # one marked input row in the window: read it in place
                        for iy in range(lo, hi + 1):
                            if self.rowocc[iy]:
                                row = src + <size_t> iy * W
                    else:
                        row = self.tmp + <size_t> oy * W
                        memset(row + sx0, 0, sx1 - sx0)
                        for iy in range(lo, hi + 1):
                            if self.rowocc[iy]:
                                rr_or_marks(row + sx0, src + <size_t> iy * W + sx0, sx1 - sx0)
                    # each run of marked columns reaches one interval of outputs
                    x = next_mark(row, sx0, sx1)
                    while x < sx1:
                        e = run_end(row, x, sx1)
                        lo = first_at_least(self.xhi, self.OW, x)
                        hi = first_at_least(self.xlo, self.OW, e)
                        if lo < hi:
                            memset(r + <size_t> oy * self.OW + lo, 1, hi - lo)
                        x = next_mark(row, e, sx1)
            for i in range(nb):
                for y in range(bands[4 * i], bands[4 * i + 1]):
                    memset(r + <size_t> y * self.OW + bands[4 * i + 2], 1, bands[4 * i + 3] - bands[4 * i + 2])
        return self._finish(list_marks(r, self.OW, y0, y1, x0, x1, self.pix), y0, y1, x0, x1, box)

    cdef long _finish(self, long count, int y0, int y1, int x0, int x1, int *box) noexcept nogil:
        """plan_c's end: 0 when nothing is listed; every pixel when the list covers most of the
        output (computing it whole, comparing, is cheaper); the box written to box."""
        cdef long i, npix = <long> self.OH * self.OW
        if count == 0:
            return 0
        if count > self.dense_above * npix:
            for i in range(npix):
                self.pix[i] = i
            y0, y1, x0, x1 = 0, self.OH, 0, self.OW
            count = npix
        box[0], box[1], box[2], box[3] = y0, y1, x0, x1
        return count
