from libc.stdint cimport int32_t, int64_t


cdef struct entry_t:
    float *base      # row 0 of the saved (npix, ncol) view
    int64_t ld       # floats between rows
    int ncol
    int64_t n        # rows saved
    int64_t ioff     # where their indices start in idx
    int64_t voff     # where their values start in vals
    int obj          # >= 0: a whole-array save, objs[obj]


cdef class Journal:
    cdef object vals_arr, idx_arr, ent_arr
    cdef float *vals
    cdef int32_t *idx
    cdef entry_t *ent
    cdef int64_t nvals, nidx, capv, capi
    cdef int nent, cape
    cdef list objs
    cdef _grow(self, int64_t capv, int64_t capi, int cape)
    cdef int save_rows(self, float *base, int64_t ld, int ncol, const int32_t *pix, int64_t n) except -1 nogil
    cdef void _restore_rows(self, int k, int j) noexcept nogil
    cdef int restore_rows(self) except -1 nogil
