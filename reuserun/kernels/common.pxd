# Declarations shared by the kernel modules.
from libc.stdint cimport int32_t, int64_t, intptr_t, uint8_t

cdef extern from "rr_simd.h" nogil:
    enum:
        ACT_NONE
    float rr_act(int act, float v, float alpha, float beta, float slope)
    int rr_store_tracked(float *dst, const float *src, int n, float thr)
    int rr_num_threads(int requested)
    long RR_PAR_MACS, RR_PAR_ELEMS, RR_PAR_FRAME_ELEMS, RR_NOGIL_ELEMS
    int RR_SHARES_PER_THREAD
    int RR_WEIGHT_READ_MACS
    int rr_threads_for(int requested, long work, long min_work)
    int rr_differs(float now, float ref, float thr)


cdef inline float *fptr(object a) except NULL:
    """Data pointer of a C-contiguous float32 ndarray (the caller keeps it alive)."""
    if not a.flags.c_contiguous:
        raise ValueError("kernel buffers must be C-contiguous")
    cdef const float[::1] v = a.reshape(-1)
    return <float *> &v[0]


cdef inline void *reloc(const void *p, const int64_t[:, ::1] moves) noexcept:
    """p moved by delta bytes when it lies in [lo, hi) of a row (lo, hi, delta) of moves: a
    cache whose buffer slid to a new origin (shift reuse) drags the kernel pointers into it."""
    cdef Py_ssize_t i
    cdef intptr_t a = <intptr_t> p
    for i in range(moves.shape[0]):
        if moves[i, 0] <= a < moves[i, 1]:
            return <void *> (a + <intptr_t> moves[i, 2])
    return <void *> p
