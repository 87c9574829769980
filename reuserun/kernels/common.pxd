# Declarations shared by the kernel modules.
from libc.stdint cimport int32_t, uint8_t

cdef extern from "rr_simd.h" nogil:
    enum:
        ACT_NONE
    float rr_act(int act, float v, float alpha, float beta, float slope)
    int rr_store_tracked(float *dst, const float *src, int n, float thr)
    int rr_num_threads(int requested)


cdef inline float *fptr(object a) except NULL:
    """Data pointer of a float32 ndarray (the caller keeps it alive)."""
    cdef float[::1] v = a.reshape(-1)
    return &v[0]
