# An undo log for one run: the old values of everything the run overwrites.
#
# A variant (InferenceSession.run_variant) runs through the normal incremental path with every
# step journaling, reads its outputs, then restores the journal in reverse order, so the cache is
# bit for bit what it was. What is saved is what the variant recomputes, so a variant costs its
# change, not a copy of the cache. Saved rows go into scratch buffers that grow (doubling) and
# are kept for the next run: a journal reused across variants allocates nothing once warm.
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy
import numpy as np

cnp.import_array()


cdef object _regrow(object old, int64_t keep, int64_t need, dtype):
    """A buffer of at least `need` items (double the old one at least), holding old[:keep]."""
    a = np.empty(max(need, 0 if old is None else 2 * old.shape[0]), dtype)
    if keep:
        a[:keep] = old[:keep]
    return a


cdef void _copy_rows(float *packed, float *base, int64_t ld, int ncol, const int32_t *pix, int64_t n,
                     bint save) noexcept nogil:
    """Rows pix[:n] of the view at base (row r at base + r * ld) to consecutive rows of packed
    (save), or back. Where rows are adjacent in memory (ld == ncol), a run of consecutive pixels
    is one copy."""
    cdef int64_t i = 0, j
    cdef size_t size
    while i < n:
        j = i + 1
        if ld == ncol:
            while j < n and pix[j] == pix[j - 1] + 1:
                j += 1
        size = (j - i) * ncol * sizeof(float)
        if save:
            memcpy(packed + i * ncol, base + pix[i] * ld, size)
        else:
            memcpy(base + pix[i] * ld, packed + i * ncol, size)
        i = j


cdef class Journal:
    def __init__(self):
        self.objs = []
        self.nent = 0
        self.nvals = self.nidx = 0
        self._grow(1024, 256, 32)

    cdef _grow(self, int64_t capv, int64_t capi, int cape):
        """Scratch of at least these capacities, keeping what is logged."""
        if self.vals_arr is None or capv > self.capv:
            self.vals_arr = _regrow(self.vals_arr, self.nvals, capv, np.float32)
            self.capv = self.vals_arr.shape[0]
            self.vals = <float *> cnp.PyArray_DATA(self.vals_arr)
        if self.idx_arr is None or capi > self.capi:
            self.idx_arr = _regrow(self.idx_arr, self.nidx, capi, np.int32)
            self.capi = self.idx_arr.shape[0]
            self.idx = <int32_t *> cnp.PyArray_DATA(self.idx_arr)
        if self.ent_arr is None or cape > self.cape:
            self.ent_arr = _regrow(self.ent_arr, self.nent, cape, np.dtype((np.void, sizeof(entry_t))))
            self.cape = self.ent_arr.shape[0]
            self.ent = <entry_t *> cnp.PyArray_DATA(self.ent_arr)

    def rows(self, cnp.ndarray arr2d, const int32_t[::1] pix, int64_t n):
        """Save rows pix[:n] of an (npix, row) float32 view (rows may be strided, each row
        contiguous) before they are overwritten."""
        if n <= 0:
            return
        if arr2d.dtype != np.float32 or arr2d.ndim != 2 or arr2d.strides[1] != 4 or arr2d.strides[0] % 4:
            raise ValueError("journal rows need a float32 (npix, C) view with contiguous rows")
        self.save_rows(<float *> cnp.PyArray_DATA(arr2d), arr2d.strides[0] // 4, arr2d.shape[1], &pix[0], n)

    cdef int save_rows(self, float *base, int64_t ld, int ncol, const int32_t *pix, int64_t n) except -1 nogil:
        """rows() for compiled callers, with or without the GIL (taken only to grow the scratch):
        row r of the view starts at base + r * ld."""
        if self.nvals + n * ncol > self.capv or self.nidx + n > self.capi or self.nent + 1 > self.cape:
            with gil:
                self._grow(self.nvals + n * ncol, self.nidx + n, self.nent + 1)
        cdef entry_t *e = &self.ent[self.nent]
        e.base, e.ld, e.ncol, e.n = base, ld, ncol, n
        e.ioff, e.voff, e.obj = self.nidx, self.nvals, -1
        memcpy(self.idx + self.nidx, pix, n * sizeof(int32_t))
        _copy_rows(self.vals + self.nvals, base, ld, ncol, pix, n, 1)
        self.nidx += n
        self.nvals += n * ncol
        self.nent += 1
        return 0

    def whole(self, arr):
        """Save a whole array."""
        cdef int32_t row0 = 0
        if (cnp.PyArray_Check(arr) and cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_C_CONTIGUOUS(arr)
                and 0 < cnp.PyArray_SIZE(arr) < 2 ** 31):
            # as one row of the scratch: nothing allocated per run
            self.save_rows(<float *> cnp.PyArray_DATA(arr), cnp.PyArray_SIZE(arr), cnp.PyArray_SIZE(arr), &row0, 1)
            return
        self._grow(0, 0, self.nent + 1)
        cdef entry_t *e = &self.ent[self.nent]
        e.obj = len(self.objs)
        self.objs.append((arr, arr.copy()))
        self.nent += 1

    def restore(self):
        """Put every saved value back, latest first (a later save may hold an earlier write),
        and empty the log. Rows are copied back without the GIL, each stretch between whole-
        array saves in one section."""
        cdef int k = self.nent - 1, j
        while k >= 0:
            j = k
            while j >= 0 and self.ent[j].obj < 0:
                j -= 1
            with nogil:
                self._restore_rows(k, j)
            if j >= 0:
                arr, old = self.objs[self.ent[j].obj]
                arr[...] = old
            k = j - 1
        self.objs.clear()
        self.nent = 0
        self.nvals = self.nidx = 0

    cdef void _restore_rows(self, int k, int j) noexcept nogil:
        """Entries k, k - 1, ..., j + 1 (row saves) put back."""
        cdef entry_t *e
        for k in range(k, j, -1):
            e = &self.ent[k]
            _copy_rows(self.vals + e.voff, e.base, e.ld, e.ncol, self.idx + e.ioff, e.n, 0)

    cdef int restore_rows(self) except -1 nogil:
        """restore() for compiled callers, without the GIL: the log must hold row saves only
        (save_rows'), as the compiled steps make."""
        cdef int k
        for k in range(self.nent):
            if self.ent[k].obj >= 0:
                with gil:
                    raise RuntimeError("the journal holds whole-array saves: restore() it")
        self._restore_rows(self.nent - 1, -1)
        self.nent = 0
        self.nvals = self.nidx = 0
        return 0
