from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef extern from "rr_region.h" nogil:
    uint32_t rr_count_nonzero(const uint8_t *m, long n)
    long rr_first_nonzero(const uint8_t *m, long n)
    long rr_last_nonzero(const uint8_t *m, long n)
    void rr_or_marks(uint8_t *dst, const uint8_t *src, long n)


cdef inline int next_mark(const uint8_t *row, int x, int x1) noexcept nogil:
    """The first marked x in [x, x1), x1 when none."""
    return x + <int> rr_first_nonzero(row + x, x1 - x) if x < x1 else x1


cdef inline int run_end(const uint8_t *row, int x, int x1) noexcept nogil:
    """The end of the run of marks starting at x."""
    cdef uint64_t w
    while x + 8 <= x1:
        memcpy(&w, row + x, 8)
        if w != 0x0101010101010101ULL:
            break
        x += 8
    while x < x1 and row[x]:
        x += 1
    return x


cdef inline long list_marks(const uint8_t *m, int W, int y0, int y1, int x0, int x1, int32_t *pix) noexcept nogil:
    """The flat indices of the marked pixels inside the box, row by row, into pix (run by run);
    returns their count."""
    cdef long n = 0
    cdef int y, x, e
    cdef const uint8_t *row
    for y in range(y0, y1):
        row = m + <size_t> y * W
        x = next_mark(row, x0, x1)
        while x < x1:
            e = run_end(row, x, x1)
            for x in range(x, e):
                pix[n] = y * W + x
                n += 1
            x = next_mark(row, e, x1)
    return n


cdef long slide_c(object flat, long before, long slack, long size, long d) except -1


cdef long scan_c(const uint8_t *m, int W, int y0, int y1, int x0, int x1, int *box) noexcept nogil


cdef class Marks:
    cdef public int H, W, C, off
    cdef public long nchanged
    cdef int b[4]         # box holding every mark (y0, y1, x0, x1); y0 >= y1: none
    cdef object _mask, _buf
    cdef uint8_t *m       # the mask's data
    cdef float *base      # the buffer's pixel 0, channel 0 (this tensor's start at base + off)
    cdef long ld          # floats between pixels in the buffer
    # the buffer's owner (the tensor it was made for; channel slices share it) slides it for
    # shift reuse: flat holds (npix + slack) pixels, the buffer starts at pixel origin
    cdef public object owner, members, flat, _views
    cdef public long slack, origin
    cdef int _rebase(self, long d, int64_t *moved) except -1
    cdef void set_box(self, long count, const int *box) noexcept nogil
    cdef void clear_c(self) noexcept nogil
    cdef void mark_all_c(self) noexcept nogil
