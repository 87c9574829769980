# The auto policy's incremental update of one kernel step, compiled: clear the outputs' marks,
# plan the pixels (PixelPlanner), journal what will be overwritten, run the kernels, rescan the
# outputs' marks. It is runtime/steps.KernelStep's incremental path with the Python calls between
# those stages taken out: on small changes they cost more than the kernels (several us a step).
# The step's state stays in the storage objects (runtime/storage.Spatial), whose marks and
# buffer pointers are C fields (kernels/marks.pyx).
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memset

from reuserun.kernels.base cimport Kernel
from reuserun.kernels.journal cimport Journal
from reuserun.kernels.marks cimport Marks, scan_c
from reuserun.kernels.planner cimport PixelPlanner
from reuserun.kernels.planner import fill_box

cnp.import_array()

# how a shift plan (runtime/shifter.py) has each step run: incrementally, whole, or
# incrementally plus forced bands
cdef enum:
    FULL_ = 1
    BANDS_ = 2
NORMAL, FULL, BANDS = 0, FULL_, BANDS_


cdef class FastStep:
    cdef PixelPlanner planner
    cdef list inputs, outputs, vectors, kernels
    cdef int32_t[::1] out_index
    cdef object pix_arr, full_arr
    cdef int32_t *pix
    cdef int32_t *full_pix
    cdef long npix
    cdef int OH, OW

    def __init__(self, PixelPlanner planner, list inputs, list outputs, list vectors, list work, pix, full_pix):
        """work: [(kernel, output index)] as in KernelStep; pix: the planner's pixel list;
        full_pix: every output pixel in order. inputs and outputs: storage.Spatial tensors."""
        for t in (*inputs, *outputs):
            if not isinstance(t, Marks):
                raise TypeError(f"{type(t).__name__} is not a spatial tensor")
        self.planner, self.inputs, self.outputs, self.vectors = planner, inputs, outputs, vectors
        self.kernels = [k for k, _ in work]
        for k in self.kernels:
            if not isinstance(k, Kernel):
                raise TypeError(f"{type(k).__name__} is not a per-pixel kernel")
        self.out_index = cnp.PyArray_FROMANY([i for _, i in work], cnp.NPY_INT32, 1, 1, cnp.NPY_ARRAY_C_CONTIGUOUS)
        self.pix_arr, self.full_arr = pix, full_pix
        self.pix = <int32_t *> cnp.PyArray_DATA(pix)
        self.full_pix = <int32_t *> cnp.PyArray_DATA(full_pix)
        self.OH, self.OW = outputs[0].H, outputs[0].W
        self.npix = <long> self.OH * self.OW

    def run(self, float thr, int threads, Journal journal, bands, exposed=None):
        """Update the outputs; returns the number of output pixels computed (every one, all
        marked, when an input changed everywhere or the rule reaches the whole output from any
        change). exposed: per output, boxes to mark changed whatever they hold (shift reuse:
        values moved in from nowhere), or None."""
        return self.run_c(thr, threads, journal, bands, exposed)

    cdef long run_c(self, float thr, int threads, Journal journal, object bands, object exposed) except -2:
        cdef int box[4]
        cdef int tight[4]
        cdef long n
        cdef int32_t *pix
        cdef Marks o
        for o in self.outputs:
            o.clear_c()
        n = -1
        for v in self.vectors:
            if v.changed:
                break
        else:
            n = self.planner.plan_c(self.inputs, bands, box)
        if n == 0:
            if exposed is not None:
                self._mark(exposed, NULL)
            return 0
        if n < 0:
            if thr == 0.0:
                return self._run_whole(threads, journal)
            n = self.npix  # under a threshold the whole output is recomputed but still compared
            box[0], box[1], box[2], box[3] = 0, self.OH, 0, self.OW
        pix = self.full_pix if n == self.npix else self.pix
        if journal is not None:
            for o in self.outputs:
                journal.save_rows(o.base + o.off, o.ld, o.C, pix, n)
        for j in range(len(self.kernels)):
            o = <Marks> self.outputs[self.out_index[j]]
            (<Kernel> self.kernels[j]).run_c(pix, n, o.m, thr, threads)
        if exposed is not None:
            self._mark(exposed, box)
            return n
        for o in self.outputs:
            o.set_box(scan_c(o.m, o.W, box[0], box[1], box[2], box[3], tight), tight)
        return n

    cdef long _run_whole(self, int threads, Journal journal) except -2:
        """Every output position recomputed exactly (an input changed everywhere, or the rule
        reaches everything from any change): no comparing, every position marked, as the
        dense run does. Exposed boxes need no marking then."""
        cdef int box[4]
        cdef Marks o
        if journal is not None:
            for o in self.outputs:
                journal.save_rows(o.base + o.off, o.ld, o.C, self.full_pix, self.npix)
        for j in range(len(self.kernels)):
            (<Kernel> self.kernels[j]).run_c(self.full_pix, self.npix, NULL, -1.0, threads)
        box[0], box[1], box[2], box[3] = 0, self.OH, 0, self.OW
        for o in self.outputs:
            memset(o.m, 1, <size_t> o.H * o.W)
            o.set_box(<long> o.H * o.W, box)
        return self.npix

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


def run_incremental(list steps, list fast, object policy, int threads, Journal journal):
    """Every step's incremental update in order: a step with a compiled path (fast[i], its
    FastStep) runs it from here, the others their own run(). journal: the steps' undo log for
    this run, or None. Returns the positions each step computed."""
    cdef Py_ssize_t i, n = len(steps)
    cdef long c
    computed = [0] * n
    for i in range(n):
        f = fast[i]
        step = steps[i]
        if f is None:
            computed[i] = step.run(False, policy, threads)
            continue
        computed[i] = (<FastStep> f).run_c(step.thr, threads, journal, (), None)
    return computed


cdef long _whole(object step, object policy, int threads) except -2:
    """One step recomputed whole: a step with a native path (its FastStep, whatever the policy:
    a whole output needs no planning) in one call, the others through run()."""
    f = getattr(step, "fast", None)
    return (<FastStep> f)._run_whole(threads, None) if f is not None else step.run(True, policy, threads)


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
        if f is not None:
            po = per_output[i]
            computed[i] = (<FastStep> f).run_c(step.thr, threads, None, bands if m == BANDS_ else (), po)
            if po is not None:
                continue
        else:
            computed[i] = step.run(False, policy, threads, bands) if m == BANDS_ else step.run(False, policy, threads)
        for o, boxes, ubox in exposed[i]:
            for b in boxes:
                fill_box(o.mask, o.W, *b, 1)
            o.rescan(_union2(ubox, o.box) if o.box else ubox)
    return computed


cdef tuple _union2(tuple a, tuple b):
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
