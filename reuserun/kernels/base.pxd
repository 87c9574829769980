from libc.stdint cimport int32_t, int64_t, uint8_t


cdef class Kernel:
    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mask, float thr, int threads) except -1 nogil
    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept
