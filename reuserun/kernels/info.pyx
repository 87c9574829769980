# How the kernels were built.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int rr_openmp(void) { return 1; }
    static int rr_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int rr_openmp(void) { return 0; }
    static int rr_max_threads(void) { return 1; }
    #endif
    #if defined(__FMA__) && defined(__AVX__)
    static int rr_fma(void) { return 1; }
    #else
    static int rr_fma(void) { return 0; }
    #endif
    """
    int rr_openmp()
    int rr_max_threads()
    int rr_fma()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (else they run serially)."""
    return bool(rr_openmp())


def max_threads():
    return rr_max_threads()


def fma_enabled():
    """True when the conv micro-kernels use hardware FMA (AVX + FMA at build time)."""
    return bool(rr_fma())
