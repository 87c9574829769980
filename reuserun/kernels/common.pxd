# Declarations shared by the kernel modules.
from libc.stdint cimport int32_t, uint8_t

cdef extern from "rr_simd.h" nogil:
    enum:
        ACT_NONE
    float rr_act(int act, float v, float alpha, float beta, float slope)
    int rr_store_tracked(float *dst, const float *src, int n, float thr)
    int rr_num_threads(int requested)
    int rr_differs(float now, float ref, float thr)


cdef inline float *fptr(object a) except NULL:
    """Data pointer of a C-contiguous float32 ndarray (the caller keeps it alive)."""
    if not a.flags.c_contiguous:
        raise ValueError("kernel buffers must be C-contiguous")
    cdef const float[::1] v = a.reshape(-1)
    return <float *> &v[0]
