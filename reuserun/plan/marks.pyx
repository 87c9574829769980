# A spatial tensor's change marks and cache buffer as C fields, and the sliding of that buffer
# for shift reuse. The per-frame path (driver.FastStep, planner.PixelPlanner) reads and writes
# them once or twice per step; as Python attributes, those reads cost more than a small step's
# kernels.
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memset

cnp.import_array()


cdef long scan_c(const uint8_t *m, int W, int y0, int y1, int x0, int x1, int *box) noexcept nogil:
    """The count of marked pixels inside the box; box gets their tight box (when any). Each row
    is searched for its first and last mark from both ends, then counted between them, 32 bytes
    a step, so scattered marks cost no more than runs."""
    cdef int y, ty0 = y1, ty1 = -1, tx0 = x1, tx1 = -1
    cdef long n = 0, first, last
    cdef const uint8_t *r
    if x0 >= x1:
        box[0], box[1], box[2], box[3] = y1, 0, x1, 0
        return 0
    for y in range(y0, y1):
        r = m + <size_t> y * W + x0
        first = rr_first_nonzero(r, x1 - x0)
        if first == x1 - x0:
            continue
        last = rr_last_nonzero(r, x1 - x0)
        n += rr_count_nonzero(r + first, last - first + 1)
        tx0 = min(tx0, x0 + first)
        tx1 = max(tx1, x0 + last)
        if y < ty0:
            ty0 = y
        ty1 = y
    box[0], box[1], box[2], box[3] = ty0, ty1 + 1, tx0, tx1 + 1
    return n


cdef class Marks:
    """Base of runtime/storage.Spatial: H, W, C, off; the per-pixel change mask (`mask`, H*W
    uint8), how many pixels it marks (`nchanged`) and a box holding them (`box`, None when
    none); the (H, W, Ctot) float32 cache buffer (`buf`)."""

    def __cinit__(self, *args, **kwargs):
        self.b[0], self.b[1], self.b[2], self.b[3] = 0, 0, 0, 0

    @property
    def npix(self):
        return <long> self.H * self.W

    @property
    def changed(self):
        return self.nchanged > 0

    @property
    def box(self):
        if self.b[0] >= self.b[1]:
            return None
        return (self.b[0], self.b[1], self.b[2], self.b[3])

    @box.setter
    def box(self, value):
        if value is None:
            self.b[0] = self.b[1] = 0
        else:
            self.b[0], self.b[1], self.b[2], self.b[3] = value

    @property
    def mask(self):
        return self._mask

    @mask.setter
    def mask(self, value):
        if not (cnp.PyArray_Check(value) and cnp.PyArray_IS_C_CONTIGUOUS(value) and cnp.PyArray_ITEMSIZE(value) == 1
                and cnp.PyArray_SIZE(value) >= <long> self.H * self.W):
            raise ValueError(f"a change mask must be a C-contiguous uint8 array of {self.H * self.W} values")
        self._mask = value
        self.m = <uint8_t *> cnp.PyArray_DATA(value)

    @property
    def buf(self):
        return self._buf

    @buf.setter
    def buf(self, value):
        if not (cnp.PyArray_Check(value) and cnp.PyArray_NDIM(value) == 3 and cnp.PyArray_TYPE(value) == cnp.NPY_FLOAT32
                and cnp.PyArray_IS_C_CONTIGUOUS(value)):
            raise ValueError("a cache buffer must be a C-contiguous (H, W, C) float32 array")
        self._buf = value
        self.ld = cnp.PyArray_DIM(value, 2)
        self.base = <float *> cnp.PyArray_DATA(value)

    cdef void set_box(self, long count, const int *box) noexcept nogil:
        """nchanged = count, and box (when count > 0) as the box holding the marks."""
        self.nchanged = count
        if count:
            self.b[0], self.b[1], self.b[2], self.b[3] = box[0], box[1], box[2], box[3]
        else:
            self.b[0] = self.b[1] = 0

    cdef void clear_c(self) noexcept nogil:
        cdef int y
        if self.nchanged:
            for y in range(self.b[0], self.b[1]):
                memset(self.m + <size_t> y * self.W + self.b[2], 0, self.b[3] - self.b[2])
            self.nchanged = 0
            self.b[0] = self.b[1] = 0

    def clear(self):
        """Unmark every pixel."""
        self.clear_c()

    def mark_all(self):
        """Mark every pixel."""
        self.mark_all_c()

    cdef void mark_all_c(self) noexcept nogil:
        memset(self.m, 1, <size_t> self.H * self.W)
        self.nchanged = <long> self.H * self.W
        self.b[0], self.b[1], self.b[2], self.b[3] = 0, self.H, 0, self.W

    cdef int _rebase(self, long d, int64_t *moved) except -1:
        """(Owner only.) Shift every tensor in this buffer by d pixels in flat order, new[p] =
        old[p + d], by sliding the buffer's origin into its slack; positions with no old pixel
        hold stale values (the exposed band, which is recomputed). Copies only when the origin
        runs out of slack (then once per slack / |d| frames). moved gets (lo, hi, delta): the
        old buffer's byte range and how far it moved, for the kernels' pointers."""
        cdef long n = <long> self.H * self.W, L = self.ld, before = self.origin, o
        cdef Marks m
        moved[0] = <int64_t> self.base
        moved[1] = moved[0] + n * L * 4
        o = slide_c(self.flat, before * L, self.slack * L, n * L, d * L) // L
        moved[2] = (o - before) * L * 4
        self.origin = o
        buf = self._views.get(o)
        if buf is None:  # a stream cycles through at most slack / |d| + 1 origins
            buf = self._views[o] = self.flat[o * L:(o + n) * L].reshape(self.H, self.W, L)
        for m in self.members:
            m._buf = buf
            m.base = <float *> cnp.PyArray_DATA(buf)
        return 0

    def rescan(self, box):
        """Count the marked pixels, which all lie inside `box`, and tighten the box."""
        cdef int y0, y1, x0, x1
        cdef int tight[4]
        y0, y1, x0, x1 = box
        self.set_box(scan_c(self.m, self.W, y0, y1, x0, x1, tight), tight)


cdef long slide_c(object flat, long before, long slack, long size, long d) except -1:
    """Where a window of `size` floats starting at `before` in flat (size + slack floats) starts
    once moved by d floats, new[i] = old[i + d]: before + d while that stays in [0, slack],
    else 0 or slack, with the overlap copied over. Values with no old counterpart are stale."""
    cdef long o = before + d, p0, src, dst, count
    if 0 <= o <= slack:
        return o
    o = 0 if d > 0 else slack
    if abs(d) < size:
        p0 = max(0, -d)  # the first new position with an old value
        src, dst, count = before + p0 + d, o + p0, size - abs(d)
        flat[dst:dst + count] = flat[src:src + count]  # numpy handles the overlap
    return o


def slide(flat, long before, long slack, long size, long d):
    """slide_c for Python callers: the new start."""
    return slide_c(flat, before, slack, size, d)


def rebase_all(list rebases, int64_t[:, ::1] moved):
    """Marks._rebase for each (owner, d) of a shift plan, into the rows of moved."""
    cdef Py_ssize_t i
    for i in range(len(rebases)):
        owner, d = rebases[i]
        (<Marks> owner)._rebase(d, &moved[i, 0])
