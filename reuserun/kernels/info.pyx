# How the kernels were built.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int rr_openmp(void) { return 1; }
    #else
    static int rr_openmp(void) { return 0; }
    #endif
    """
    int rr_openmp()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (else they run serially)."""
    return bool(rr_openmp())


cdef extern from "rr_simd.h":
    cdef enum:
        ACT_RELU, ACT_LEAKY_RELU, ACT_CLIP, ACT_SIGMOID, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_TANH,
        ACT_ELU, ACT_SILU, ACT_PRELU, ACT_SOFTPLUS, ACT_MISH, ACT_GELU

# The activations the kernels fuse, by IR kind, with their codes from the C enum (the one source).
ACT_CODES = {"relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU, "clip": ACT_CLIP, "sigmoid": ACT_SIGMOID,
             "hard_sigmoid": ACT_HARD_SIGMOID, "hard_swish": ACT_HARD_SWISH, "tanh": ACT_TANH, "elu": ACT_ELU,
             "silu": ACT_SILU, "prelu": ACT_PRELU, "softplus": ACT_SOFTPLUS, "mish": ACT_MISH, "gelu": ACT_GELU}
