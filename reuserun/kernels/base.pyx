# The one interface of every per-pixel kernel: compute output pixels pix[:n] into the cache,
# marking in mask the positions that moved by more than thr. Subclasses implement run_c, which
# runs without the GIL; the compiled step driver (driver.pyx) calls it directly, a whole chain
# of steps in one nogil section, Python code through run(). Kernels that point into the caches
# follow them when shift reuse slides a buffer (relocate_c).
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef class Kernel:
    cdef int run_c(self, const int32_t *pix, int n, uint8_t *mask, float thr, int threads) except -1 nogil:
        with gil:
            raise NotImplementedError(type(self).__name__)

    def run(self, const int32_t[::1] pix, int n, uint8_t[::1] mask, float thr, int threads):
        """Compute output pixels pix[:n]; set mask[p] = 1 where the output changed by more than
        thr (thr < 0: no tracking, mask may be None)."""
        if n <= 0:
            return
        if n > pix.shape[0]:
            raise ValueError(f"n={n} exceeds the pixel list ({pix.shape[0]})")
        cdef uint8_t *m = &mask[0] if mask is not None else NULL
        with nogil:
            self.run_c(&pix[0], n, m, thr, threads)

    cdef void relocate_c(self, const int64_t[:, ::1] moves) noexcept:
        pass  # a kernel holding pointers into the caches overrides this to move them (common.reloc)

    def relocate(self, const int64_t[:, ::1] moves):
        """Follow caches that moved in memory (shift reuse)."""
        self.relocate_c(moves)


def relocate_all(list kernels, const int64_t[:, ::1] moves):
    """relocate() every kernel in one call: each shifted frame moves them all."""
    for k in kernels:
        if isinstance(k, Kernel):
            (<Kernel> k).relocate_c(moves)
        else:
            k.relocate(moves)
