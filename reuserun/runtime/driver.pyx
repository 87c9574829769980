# The auto policy's incremental update of one kernel step, compiled: clear the outputs' marks,
# plan the pixels (PixelPlanner), journal what will be overwritten, run the kernels, rescan the
# outputs' marks. It is runtime/steps.KernelStep's incremental path with the Python calls between
# those stages taken out: on small changes they cost more than the kernels (several us a step).
# The step's state stays in the storage objects (runtime/storage.Spatial), whose marks and
# buffer pointers are C fields (plan/marks.pyx), so a run of compiled steps goes without the
# GIL from its first to its last: other Python threads (run_variants' workers) run meanwhile.
cimport numpy as cnp
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.math cimport isfinite
from libc.string cimport memcpy, memset
import numpy as np

from reuserun.kernels.base cimport Kernel
from reuserun.kernels.conv cimport SpatialGemmKernel
from reuserun.runtime.journal cimport Journal
from reuserun.plan.marks cimport Marks, list_marks, scan_c
from reuserun.plan.planner cimport PixelPlanner
from reuserun.kernels.region import fill

cnp.import_array()

# how a shift plan (runtime/shifter.py) has each step run: incrementally, whole, or
# incrementally plus forced bands
cdef enum:
    FULL_ = 1
    BANDS_ = 2
NORMAL, FULL, BANDS = 0, FULL_, BANDS_

# run_n's box[0] when it returns: the kernels computed nothing, or every output is recomputed
# and marked (the caller marks nothing more)
cdef enum:
    NONE_COMPUTED = -1
    MARKED_WHOLE = -2


cdef PyObject **_ptrs(object arr):
    return <PyObject **> cnp.PyArray_DATA(arr)


cdef class NativeStep:
    """A step's compiled incremental update, run without the GIL (run_n) in run_incremental's
    chains. ends_chain: its output is a plain tensor, whose changed flag Python reads, so a
    chain stops after it and the flag is set from the count run_n returns."""
    cdef bint ends_chain

    cdef bint whole_c(self) except -1:
        return False

    cdef bint plain_vectors_changed_c(self) except -1:
        return False

    cdef bint spatial_vectors_changed_n(self) noexcept nogil:
        return False

    cdef long run_n(self, float thr, int threads, Journal journal, const int32_t *bands, int nb, bint whole,
                    bint exposed, int *box) except -2 nogil:
        with gil:
            raise NotImplementedError(type(self).__name__)


cdef class GemmStep(NativeStep):
    """Flatten -> Gemm over a spatial tensor (runtime/steps.SpatialGemmStep): the partial sums
    of the input's changed pixels recomputed, then summed; every pixel when it changed
    everywhere."""
    cdef Marks x
    cdef SpatialGemmKernel kernel
    cdef object keep
    cdef float *partial
    cdef float *y
    cdef int32_t *pix
    cdef int32_t *full_pix
    cdef long npix, npad, N

    def __init__(self, Marks x, SpatialGemmKernel kernel, partial, y, pix, full_pix):
        """partial: the kernel's (npix, npad) partial sums; y: the output's flat float32 array;
        pix: scratch for the pixel list; full_pix: every pixel in order."""
        self.x, self.kernel, self.ends_chain = x, kernel, True
        self.keep = (partial, y, pix, full_pix)
        self.partial = <float *> cnp.PyArray_DATA(partial)
        self.y = <float *> cnp.PyArray_DATA(y)
        self.pix = <int32_t *> cnp.PyArray_DATA(pix)
        self.full_pix = <int32_t *> cnp.PyArray_DATA(full_pix)
        self.npix, self.npad, self.N = partial.shape[0], partial.shape[1], y.shape[0]

    cdef long run_n(self, float thr, int threads, Journal journal, const int32_t *bands, int nb, bint whole,
                    bint exposed, int *box) except -2 nogil:
        cdef long n = self.npix
        cdef int32_t *pix = self.full_pix
        cdef int32_t row0 = 0
        cdef const int *b = self.x.b
        if not self.x.nchanged and not whole:
            return 0
        if not whole and self.x.nchanged < self.npix:
            pix = self.pix
            n = list_marks(self.x.m, self.x.W, b[0], b[1], b[2], b[3], pix)
        if journal is not None:
            journal.save_rows(self.partial, self.npad, self.npad, pix, n)
            journal.save_rows(self.y, self.N, self.N, &row0, 1)
        self.kernel.run_n(pix, n, threads)
        return n


cdef class FastStep(NativeStep):
    cdef PixelPlanner planner
    cdef list inputs, outputs, kernels
    cdef object keep                 # the arrays behind the pointers below
    cdef PyObject **ins              # inputs, outputs, kernels: borrowed (the lists hold them)
    cdef PyObject **outs
    cdef PyObject **kerns
    cdef PyObject **svecs            # the vectors held as 1x1 spatial tensors (borrowed)
    cdef list plain_vectors          # the others: plain tensors whose flag Python sets
    cdef int nin, nout, nkern, nsvec
    cdef const int32_t *out_index
    cdef int32_t *pix
    cdef int32_t *full_pix
    cdef long npix
    cdef int OH, OW
    cdef object bandbuf              # run_c's bands as C ints (4 a band), grown as needed

    def __init__(self, PixelPlanner planner, list inputs, list outputs, list vectors, list work, pix, full_pix):
        """work: [(kernel, output index)] as in KernelStep; pix: the planner's pixel list;
        full_pix: every output pixel in order. inputs and outputs: storage.Spatial tensors."""
        for t in (*inputs, *outputs):
            if not isinstance(t, Marks):
                raise TypeError(f"{type(t).__name__} is not a spatial tensor")
        self.planner, self.inputs, self.outputs = planner, inputs, outputs
        self.kernels = [k for k, _ in work]
        for k in self.kernels:
            if not isinstance(k, Kernel):
                raise TypeError(f"{type(k).__name__} is not a per-pixel kernel")
        spatial_vectors = [v for v in vectors if isinstance(v, Marks)]
        self.plain_vectors = [v for v in vectors if not isinstance(v, Marks)]
        refs = [np.array([<Py_ssize_t> <PyObject *> o for o in objs] or [0], np.intp)
                for objs in (inputs, outputs, self.kernels, spatial_vectors)]
        out_index = np.array([i for _, i in work] or [0], np.int32)
        self.keep = (refs, out_index, pix, full_pix, spatial_vectors)  # svecs borrows from the list
        self.ins, self.outs, self.kerns = _ptrs(refs[0]), _ptrs(refs[1]), _ptrs(refs[2])
        self.svecs, self.nsvec = _ptrs(refs[3]), len(spatial_vectors)
        self.nin, self.nout, self.nkern = len(inputs), len(outputs), len(self.kernels)
        self.out_index = <const int32_t *> cnp.PyArray_DATA(out_index)
        self.pix = <int32_t *> cnp.PyArray_DATA(pix)
        self.full_pix = <int32_t *> cnp.PyArray_DATA(full_pix)
        self.OH, self.OW = outputs[0].H, outputs[0].W
        self.npix = <long> self.OH * self.OW
        self.bandbuf = np.empty(16, np.int32)

    def run(self, float thr, int threads, Journal journal, bands, exposed=None):
        """Update the outputs; returns the number of output pixels computed (every one, all
        marked, when an input changed everywhere or the rule reaches the whole output from any
        change). exposed: per output, boxes to mark changed whatever they hold (shift reuse:
        values moved in from nowhere), or None."""
        return self.run_c(thr, threads, journal, bands, exposed)

    cdef bint whole_c(self) except -1:
        """Whether a per-channel vector input (a squeeze-excite scale) changed: every output
        position then changes."""
        return self.plain_vectors_changed_c() or self.spatial_vectors_changed_n()

    cdef bint plain_vectors_changed_c(self) except -1:
        for v in self.plain_vectors:
            if v.changed:
                return True
        return False

    cdef bint spatial_vectors_changed_n(self) noexcept nogil:
        """A spatial vector may come from an earlier step of the same chain: read its marks
        only once that step has run."""
        cdef int i
        for i in range(self.nsvec):
            if (<Marks> self.svecs[i]).nchanged:
                return True
        return False

    cdef long run_c(self, float thr, int threads, Journal journal, object bands, object exposed) except -2:
        """run() for compiled callers that hold the GIL: bands and exposed come as Python lists."""
        cdef int box[4]
        cdef long n
        cdef bint whole = self.whole_c()
        cdef int nb = len(bands) if bands else 0, i
        if 4 * nb > self.bandbuf.shape[0]:
            self.bandbuf = np.empty(8 * nb, np.int32)
        cdef int32_t[::1] bp = self.bandbuf
        for i in range(nb):
            bp[4 * i], bp[4 * i + 1], bp[4 * i + 2], bp[4 * i + 3] = bands[i]
        with nogil:
            n = self.run_n(thr, threads, journal, &bp[0], nb, whole, exposed is not None, box)
        if exposed is not None and box[0] != MARKED_WHOLE:
            self._mark(exposed, box if box[0] != NONE_COMPUTED else NULL)
        return n

    cdef long run_n(self, float thr, int threads, Journal journal, const int32_t *bands, int nb, bint whole,
                    bint exposed, int *box) except -2 nogil:
        """The update without the GIL. whole: recompute every position (whole_c()); exposed:
        the caller marks the outputs (_mark with the box computed, written to box, or with
        NONE_COMPUTED or MARKED_WHOLE in box[0]), else they are rescanned here."""
        cdef int tight[4]
        cdef long n = -1
        cdef int32_t *pix
        cdef int i
        for i in range(self.nout):
            (<Marks> self.outs[i]).clear_c()
        if not whole:
            n = self.planner.plan_c(self.ins, self.nin, bands, nb, box)
        if n == 0:
            box[0] = NONE_COMPUTED
            return 0
        if n < 0:
            if thr == 0.0:
                box[0] = MARKED_WHOLE
                return self._run_whole(threads, journal)
            n = self.npix  # under a threshold the whole output is recomputed but still compared
            box[0], box[1], box[2], box[3] = 0, self.OH, 0, self.OW
        pix = self.full_pix if n == self.npix else self.pix
        self._save_outputs(journal, pix, n)
        for i in range(self.nkern):
            (<Kernel> self.kerns[i]).run_c(pix, n, (<Marks> self.outs[self.out_index[i]]).m, thr, threads)
        if not exposed:
            for i in range(self.nout):
                (<Marks> self.outs[i]).set_box(
                    scan_c((<Marks> self.outs[i]).m, (<Marks> self.outs[i]).W, box[0], box[1], box[2], box[3], tight),
                    tight)
        return n

    cdef long _run_whole(self, int threads, Journal journal) except -2 nogil:
        """Every output position recomputed exactly (an input changed everywhere, or the rule
        reaches everything from any change): no comparing, every position marked, as the
        dense run does. Exposed boxes need no marking then."""
        cdef int i
        self._save_outputs(journal, self.full_pix, self.npix)
        for i in range(self.nkern):
            (<Kernel> self.kerns[i]).run_c(self.full_pix, self.npix, NULL, -1.0, threads)
        for i in range(self.nout):
            (<Marks> self.outs[i]).mark_all_c()
        return self.npix

    cdef int _save_outputs(self, Journal journal, const int32_t *pix, long n) except -1 nogil:
        """Journal the outputs' rows pix[:n] before the kernels overwrite them (no journal: none)."""
        cdef int i
        if journal is not None:
            for i in range(self.nout):
                journal.save_rows((<Marks> self.outs[i]).base + (<Marks> self.outs[i]).off,
                                  (<Marks> self.outs[i]).ld, (<Marks> self.outs[i]).C, pix, n)
        return 0

    cdef void _mark(self, list exposed, int *box):
        """Mark each output's exposed boxes, then count its marks and bound them: they lie in
        the boxes and in box (what the kernels computed; NULL: nothing was)."""
        cdef int y, b0, b1, b2, b3
        cdef int tight[4]
        cdef int u[4]
        cdef Marks o
        for i in range(len(self.outputs)):
            o = <Marks> self.outputs[i]
            if box != NULL:
                u[0], u[1], u[2], u[3] = box[0], box[1], box[2], box[3]
            else:
                u[0], u[1], u[2], u[3] = o.H, 0, o.W, 0
            for b0, b1, b2, b3 in exposed[i] or ():
                for y in range(b0, b1):
                    memset(o.m + <size_t> y * o.W + b2, 1, b3 - b2)
                u[0], u[1], u[2], u[3] = min(u[0], b0), max(u[1], b1), min(u[2], b2), max(u[3], b3)
            if u[0] < u[1] and u[2] < u[3]:
                o.set_box(scan_c(o.m, o.W, u[0], u[1], u[2], u[3], tight), tight)
            else:
                o.set_box(0, tight)


# run_incremental's record of one step: its native step, threshold, whether it recomputes whole,
# its count
cdef struct chain_t:
    PyObject *f
    float thr
    bint whole
    long count


def run_incremental(list steps, list fast, object policy, int threads, Journal journal):
    """Every step's incremental update in order: a step with a compiled path (fast[i], its
    NativeStep) runs it from here, each run of such steps in one section without the GIL; the
    others run their own run(). journal: the steps' undo log for this run, or None. Returns
    the positions each step computed."""
    cdef Py_ssize_t n = len(steps)
    computed = [0] * n
    cdef chain_t *ch = <chain_t *> malloc(max(n, 1) * sizeof(chain_t))
    if ch == NULL:
        raise MemoryError()
    try:
        _run_chains(steps, fast, policy, threads, journal, ch, computed)
    finally:
        free(ch)
    return computed


cdef int _run_chains(list steps, list fast, object policy, int threads, Journal journal, chain_t *ch,
                     list computed) except -1:
    cdef Py_ssize_t i = 0, j, k, n = len(steps)
    cdef int box[4]
    while i < n:
        if fast[i] is None:
            computed[i] = steps[i].run(False, policy, threads)
            i += 1
            continue
        j = i
        while j < n and fast[j] is not None:  # a chain's plain vectors come from steps before it
            ch[j].f = <PyObject *> fast[j]
            ch[j].thr = steps[j].thr
            ch[j].whole = (<NativeStep> fast[j]).plain_vectors_changed_c()
            j += 1
            if (<NativeStep> fast[j - 1]).ends_chain:
                break
        with nogil:
            for k in range(i, j):
                ch[k].count = (<NativeStep> ch[k].f).run_n(
                    ch[k].thr, threads, journal, NULL, 0,
                    ch[k].whole or (<NativeStep> ch[k].f).spatial_vectors_changed_n(), False, box)
        for k in range(i, j):
            computed[k] = ch[k].count
        if (<NativeStep> fast[j - 1]).ends_chain:
            steps[j - 1].outputs[0].changed = ch[j - 1].count > 0
        i = j
    return 0


cdef long _whole(object step, object policy, int threads) except -2:
    """One step recomputed whole: a step with a native path (its FastStep, whatever the policy:
    a whole output needs no planning) in one call, the others through run()."""
    f = step.fast
    cdef long n
    if not isinstance(f, FastStep):
        return step.run(True, policy, threads)
    with nogil:
        n = (<FastStep> f)._run_whole(threads, None)
    return n


def run_full(list steps, object policy, int threads):
    """Every step recomputed whole (a frame that changed everywhere)."""
    return [_whole(step, policy, threads) for step in steps]


def run_shifted(list steps, list fast, list modes, list exposed, list per_output, object policy, int threads):
    """The steps of a frame that is the reference moved, as its plan says (runtime/shifter's
    ShiftPlan: modes, exposed, exposed_per_output), once the caches have moved. A step in mode
    FULL is recomputed whole; the others run incrementally, with the plan's bands in mode
    BANDS. A moving output's exposed boxes (stale values moved in from nowhere) are marked
    changed whatever they hold: by the compiled step itself, else after the step. Returns the
    positions each step computed."""
    cdef Py_ssize_t i, n = len(steps)
    cdef int m
    computed = [0] * n
    for i in range(n):
        mode, bands = modes[i]
        m = mode
        step = steps[i]
        f = fast[i]
        if m == FULL_:
            computed[i] = _whole(step, policy, threads)
            continue
        if isinstance(f, FastStep):
            po = per_output[i]
            computed[i] = (<FastStep> f).run_c(step.thr, threads, None, bands if m == BANDS_ else (), po)
            if po is not None:
                continue
        else:
            computed[i] = step.run(False, policy, threads, bands) if m == BANDS_ else step.run(False, policy, threads)
        for o, boxes, ubox in exposed[i]:
            for b in boxes:
                fill(o.mask, o.W, *b, 1)
            o.rescan(_union2(ubox, o.box) if o.box else ubox)
    return computed


cdef tuple _union2(tuple a, tuple b):
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


cdef class DeclaredRunner:
    """Variants of the reference whose edits are declared boxes of its one spatial input x, run
    one after another without the GIL and without Python between them: each marks its boxes,
    writes its values there (journaled), runs every step (all native), copies the outputs, and
    restores the journal, so the cache ends as it began. Bound once to a session's steps,
    input, journal, scratch and outputs (InferenceSession._declared_batch)."""
    cdef Marks x
    cdef Journal journal
    cdef object keep
    cdef PyObject **fp
    cdef const float *thr
    cdef float **srcp
    cdef const int64_t *sz
    cdef uint8_t *m
    cdef int32_t *pix
    cdef Py_ssize_t nsteps, nout
    cdef public long marked  # the last variant's marked positions

    def __init__(self, list fast, list thrs, Marks x, Journal journal, mask, pix, list outputs):
        """fast: every step's NativeStep, thrs their thresholds; mask, pix: H*W uint8 and int32
        scratch; outputs: the flat float32 arrays of the outputs to copy."""
        for f in fast:
            if not isinstance(f, NativeStep):
                raise TypeError("DeclaredRunner: every step must have a native path")
        for a in outputs:
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError("DeclaredRunner: outputs must be C-contiguous float32")
        if mask.dtype != np.uint8 or pix.dtype != np.int32 or mask.size < x.H * x.W or pix.size < x.H * x.W \
                or not (mask.flags.c_contiguous and pix.flags.c_contiguous):
            raise ValueError("DeclaredRunner: the scratch must hold H*W uint8 and int32")
        refs = np.array([<Py_ssize_t> <PyObject *> f for f in fast] or [0], np.intp)
        thr = np.array(thrs or [0.0], np.float32)
        src = np.array([a.ctypes.data for a in outputs] or [0], np.intp)
        size = np.array([a.size for a in outputs] or [0], np.int64)
        self.keep = (list(fast), refs, thr, src, size, mask, pix, list(outputs))
        self.x, self.journal = x, journal
        self.fp = _ptrs(refs)
        self.thr = <const float *> cnp.PyArray_DATA(thr)
        self.srcp = <float **> cnp.PyArray_DATA(src)
        self.sz = <const int64_t *> cnp.PyArray_DATA(size)
        self.m = <uint8_t *> cnp.PyArray_DATA(mask)
        self.pix = <int32_t *> cnp.PyArray_DATA(pix)
        self.nsteps, self.nout = len(fast), len(outputs)

    def run(self, int threads, const int32_t[:, ::1] boxes, const int64_t[::1] starts, frames, float fill,
            list results, int64_t[:, ::1] counts):
        """boxes[starts[b]:starts[b + 1]]: variant b's boxes (y0, y1, x0, x1), each non-empty and
        inside x's grid. frames: (B, C, H*W) float32, the variants (read at their boxes), or
        None: every declared value is fill. results: per output, its (B, size) float32 array;
        counts[b, k]: the positions step k computed for variant b. Returns -1, or the first
        variant whose declared values hold NaN or Inf (then nothing was run)."""
        cdef Marks x = self.x
        cdef Py_ssize_t B = starts.shape[0] - 1, b, k, i, j
        cdef int C = x.C, W = x.W, y, xx, c
        cdef int bx[4]
        cdef int box[4]
        cdef int saved[4]
        cdef long HW = <long> x.H * x.W, n = 0, saved_n = x.nchanged, bad = -1
        cdef const float *fr = NULL
        cdef float *dst
        cdef uint8_t *m = self.m
        cdef uint8_t *saved_m = x.m
        if counts.shape[0] < B or counts.shape[1] < self.nsteps or len(results) != self.nout:
            raise ValueError("DeclaredRunner.run: counts or results do not fit")
        res = np.array([r.ctypes.data for r in results] or [0], np.intp)
        for j in range(self.nout):
            r = results[j]
            if r.dtype != np.float32 or not r.flags.c_contiguous or r.size != B * self.sz[j]:
                raise ValueError("DeclaredRunner.run: each result must be a C-contiguous (B, size) float32 array")
        cdef float **resp = <float **> cnp.PyArray_DATA(res)
        if frames is not None:
            if frames.dtype != np.float32 or not frames.flags.c_contiguous or frames.size != B * C * HW:
                raise ValueError("DeclaredRunner.run: frames must be a C-contiguous (B, C, H*W) float32 array")
            fr = <const float *> cnp.PyArray_DATA(frames)
        for i in range(boxes.shape[0]):
            if not (0 <= boxes[i, 0] < boxes[i, 1] <= x.H and 0 <= boxes[i, 2] < boxes[i, 3] <= W):
                raise ValueError(f"DeclaredRunner.run: box {tuple(boxes[i])} is empty or outside the {x.H}x{W} grid")
        if fr == NULL:
            bad = -1 if isfinite(fill) or B == 0 else 0
        else:
            with nogil:  # the declared values are checked before anything runs
                for b in range(B):
                    for i in range(starts[b], starts[b + 1]):
                        for c in range(C):
                            for y in range(boxes[i, 0], boxes[i, 1]):
                                for xx in range(boxes[i, 2], boxes[i, 3]):
                                    if not isfinite(fr[(b * C + c) * HW + <long> y * W + xx]) and bad < 0:
                                        bad = b
        if bad >= 0:
            return bad
        saved[0], saved[1], saved[2], saved[3] = x.b[0], x.b[1], x.b[2], x.b[3]
        memset(m, 0, HW)
        x.m = m
        bx[0], bx[1], bx[2], bx[3] = 0, 0, 0, 0
        try:
            with nogil:
                for b in range(B):
                    for y in range(bx[0], bx[1]):  # the last variant's marks
                        memset(m + <long> y * W + bx[2], 0, bx[3] - bx[2])
                    bx[0], bx[1], bx[2], bx[3] = x.H, 0, W, 0
                    for i in range(starts[b], starts[b + 1]):
                        for y in range(boxes[i, 0], boxes[i, 1]):
                            memset(m + <long> y * W + boxes[i, 2], 1, boxes[i, 3] - boxes[i, 2])
                        bx[0], bx[1] = min(bx[0], boxes[i, 0]), max(bx[1], boxes[i, 1])
                        bx[2], bx[3] = min(bx[2], boxes[i, 2]), max(bx[3], boxes[i, 3])
                    n = list_marks(m, W, bx[0], bx[1], bx[2], bx[3], self.pix)
                    x.set_box(n, bx)
                    self.journal.save_rows(x.base + x.off, x.ld, C, self.pix, n)
                    for i in range(n):
                        dst = x.base + <long> self.pix[i] * x.ld + x.off
                        for c in range(C):
                            dst[c] = fill if fr == NULL else fr[(b * C + c) * HW + self.pix[i]]
                    for k in range(self.nsteps):
                        counts[b, k] = (<NativeStep> self.fp[k]).run_n(self.thr[k], threads, self.journal, NULL, 0,
                                                                       False, False, box)
                    for j in range(self.nout):
                        memcpy(resp[j] + b * self.sz[j], self.srcp[j], self.sz[j] * sizeof(float))
                    self.journal.restore_rows()
                    if bx[0] >= bx[1]:
                        bx[0], bx[1], bx[2], bx[3] = 0, 0, 0, 0
        finally:
            self.journal.restore()  # (empty unless a variant stopped half-way)
            x.m = saved_m
            x.set_box(saved_n, saved)
        self.marked = n
        return -1
