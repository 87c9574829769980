from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint8_t


cpdef enum ReachKind:
    # how an output position depends on the step's inputs (plan/rules.py's Reach.kind)
    REACH_SAME = 0
    REACH_WINDOW = 1
    REACH_ALL = 2


cdef class PixelPlanner:
    cdef int kind, OH, OW
    cdef const int32_t *ylo
    cdef const int32_t *yhi
    cdef const int32_t *xlo
    cdef const int32_t *xhi
    cdef uint8_t *reach
    cdef uint8_t *tmp
    cdef uint8_t *rowocc
    cdef int32_t *pre
    cdef int32_t *pix
    cdef double dense_above
    cdef object keep
    cdef long plan_c(self, PyObject **inputs, int nin, const int32_t *bands, int nb, int *box) noexcept nogil
    cdef long _finish(self, long count, int y0, int y1, int x0, int x1, int *box) noexcept nogil

