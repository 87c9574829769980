from libc.stdint cimport int32_t


cdef class SpatialGemmKernel:
    cdef object keep
    cdef const float *x
    cdef int C, ldx, npix, npad, N
    cdef const float *w
    cdef float *partial
    cdef const float *bias
    cdef float *y
    cdef float *ybuf
    cdef int act, blocked
    cdef float alpha, beta
    cdef void run_n(self, const int32_t *pix, int n, int threads) noexcept nogil
    cdef void _partials(self, const int32_t *pix, int n, int nt) noexcept nogil
