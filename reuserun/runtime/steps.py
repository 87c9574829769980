"""The per-frame program: steps that bring each tensor's cache up to date.

A KernelStep asks the planner's rule which output positions the inputs' changes reach, lets the
policy turn that into a pixel list, and runs its kernels there; the kernels mark the positions
whose values really changed. A FallbackStep recomputes a whole tensor (numpy, or onnxruntime on a
partition) when any input changed; a ToSpatialStep brings such a tensor into channels-last
storage for the kernels, marking only the positions whose values moved.

Every step may be given a journal (runtime/journal.pyx) for one run: it then records the old
values of everything it is about to overwrite, so the run can be undone (variants).
"""
from __future__ import annotations

import numpy as np

from reuserun.ir import Node
from reuserun.kernels import region
from reuserun.plan import planner
from reuserun.plan import shift as sh
from reuserun.plan.policies import DENSE_ABOVE
from reuserun.runtime import driver
from reuserun.runtime.numpy_ops import NUMPY_OPS


class Step:
    """What every step of the program offers the executor (runtime/executor.py, driver.pyx).
    A step reads its inputs' caches and masks and brings its outputs' up to date: run() with
    full=True recomputes them whole, otherwise only what the inputs' changes reach (bands:
    output boxes to compute whatever the masks say, for shift reuse; only steps whose `fast`
    path takes bands get any). It returns the positions it computed and leaves each output's
    marks saying which positions changed. The defaults describe a step over whole tensors."""
    node: Node | None = None
    journal = None  # an undo log for one run (variants): what the step overwrites goes there first
    takes_threshold = False  # whether a per-layer threshold applies (then thr holds it)
    thr = 0.0
    positional = False  # whether the step computes per position of an output grid
    npix = 1  # positions of its output grid (1: whole tensors)
    macs_per_pixel = 0  # MACs per computed position (positional steps) ...
    macs = 0  # ... or per run (the others)
    fast = None  # its compiled path (a driver.NativeStep), or None
    vector_inputs: list = []  # broadcast operands whose change reaches every position

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        raise NotImplementedError

    def compiled(self, policy) -> bool:
        """Whether an incremental run is the step's `fast` path under this policy."""
        return False

    def kept(self) -> list:
        """Arrays other than its outputs' caches that hold state between frames (partial sums)."""
        return []

    def scratch(self) -> list:
        """Its per-run working arrays (masks, pixel lists)."""
        return []

    def kernels(self) -> list:
        """The kernels it holds, which keep raw pointers into the caches (moved by shift reuse)."""
        return []

    # whether shift reuse can carry a program holding this step
    shiftable = True

    def shift_rule(self):
        """How its outputs move when its inputs move (plan/shift.py's rules): "fixed" (the
        default: it mixes positions, so its outputs are recomputed whole and do not move),
        "still", "same", a band rule, or None (recomputed whole)."""
        return "fixed"


class KernelStep(Step):
    takes_threshold = True
    positional = True

    def __init__(self, node, inputs, outputs, work, reach, macs_per_pixel=0, vectors=()):
        """inputs: spatial tensors the reach rule maps to the outputs' grid; vectors: broadcast
        operands (per-channel scales and the like) whose change reaches every position.
        work: [(kernel, output index)]: several kernels may fill one output (concat) or one
        input may feed several outputs (split)."""
        self.node, self.inputs, self.outputs, self.work = node, inputs, outputs, work
        self.reach = reach
        self.macs_per_pixel = macs_per_pixel
        self.vector_inputs = list(vectors)
        out = outputs[0]
        self.OH, self.OW, self.npix = out.H, out.W, out.npix
        self.full_pix = np.arange(self.npix, dtype=np.int32)
        self.reach_mask = np.zeros(self.npix, np.uint8)
        self.compute_mask = np.zeros(self.npix, np.uint8)
        self.pix = np.empty(self.npix, np.int32)
        if reach.kind == "window":
            # the planners read a window rule's changes from input 0 alone (and take the first
            # changed input as it): a second spatial input would go unplanned
            if len(inputs) != 1:
                raise ValueError(f"{node.name}: a window rule takes one spatial input, got {len(inputs)}")
            self.tmp = np.zeros(self.OH * inputs[0].W, np.uint8)
        # the auto policy's whole incremental update (pixel-exact planning, journal, kernels,
        # rescans) in one native call, where the rule allows native planning
        native = None
        kinds = planner.ReachKind
        if reach.kind == "same":
            native = planner.PixelPlanner(kinds.REACH_SAME, self.OH, self.OW, DENSE_ABOVE, self.reach_mask, self.pix)
        elif reach.kind == "all":
            native = planner.PixelPlanner(kinds.REACH_ALL, self.OH, self.OW, DENSE_ABOVE, self.reach_mask, self.pix)
        elif reach.kind == "window" and all(ax.monotone for ax in reach._axes):
            native = planner.PixelPlanner(kinds.REACH_WINDOW, self.OH, self.OW, DENSE_ABOVE, self.reach_mask,
                                          self.pix, self.tmp, reach.ylo, reach.yhi, reach.xlo, reach.xhi,
                                          inputs[0].H, inputs[0].W)
        self.fast = None if native is None else driver.FastStep(
            native, list(inputs), list(outputs), self.vector_inputs, list(work), self.pix, self.full_pix)

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        """Update the outputs; returns the number of output pixels computed. bands: output
        boxes to compute whatever the inputs' masks say (shift reuse, plan/shift.py)."""
        if full:
            if self.journal is not None:
                for o in self.outputs:
                    self.journal.rows(o.rows(), self.full_pix, self.npix)
            for kernel, _ in self.work:
                kernel.run(self.full_pix, self.npix, None, -1.0, threads)
            for o in self.outputs:
                o.mark_all()
            return self.npix
        if self.compiled(policy):
            return self.fast.run(self.thr, threads, self.journal, bands)
        for o in self.outputs:
            o.clear()
        n, box = self._plan(policy, bands)
        if n == 0:
            return 0
        if n < 0:
            if self.thr == 0.0:
                # every position recomputed exactly: skip comparing, mark it all changed
                return self.run(True, policy, threads)
            n, box = self.npix, (0, self.OH, 0, self.OW)  # under a threshold, still compare
        pix = self.full_pix if n == self.npix else self.pix
        if self.journal is not None:
            for o in self.outputs:
                self.journal.rows(o.rows(), pix, n)
        for kernel, i in self.work:
            kernel.run(pix, n, self.outputs[i].mask, self.thr, threads)
        for o in self.outputs:
            o.rescan(box)
        return n

    def compiled(self, policy) -> bool:
        """Whether an incremental run() is the one native call (driver.FastStep), which also
        marks exposed boxes itself."""
        return self.fast is not None and policy.name == "auto"

    def scratch(self) -> list:
        return [self.reach_mask, self.compute_mask, self.pix, self.full_pix] + (
            [self.tmp] if self.reach.kind == "window" else [])

    def kernels(self) -> list:
        return [k for k, _ in self.work]

    def shift_rule(self):
        x = self.inputs[0] if self.inputs else None
        return sh.shift_rule(self.node, self.reach, (x.H, x.W) if x is not None else (1, 1))

    def _plan(self, policy, bands=()):
        """Fill self.pix with the pixels to compute; returns (count, box holding them), count -1
        when an input changed everywhere (then every output position is reached: a superset at
        worst)."""
        if any(v.changed for v in self.vector_inputs):
            return -1, None
        changed = [s for s in self.inputs if s.nchanged]
        if not changed and not bands:
            return 0, None
        kind = self.reach.kind
        if kind == "all" or any(s.nchanged == s.npix for s in changed):
            return -1, None
        r = self.reach_mask
        if kind == "same":
            if len(changed) == 1 and not bands:
                r, box = changed[0].mask, changed[0].box
            else:
                box = _union([s.box for s in changed] + list(bands))
                region.fill(r, self.OW, *box, 0)
                for s in changed:
                    region.or_box(r, s.mask, self.OW, *s.box)
        else:
            g = self.reach
            rbox = g.out_box(changed[0].box) if changed else None
            boxes = ([rbox] if rbox is not None else []) + list(bands)
            if not boxes:
                return 0, None
            box = _union(boxes)
            if bands:
                region.fill(r, self.OW, *box, 0)
            if rbox is not None:
                s = changed[0]
                if not region.reach(s.mask, s.W, *s.box, r, self.OW, *rbox, g.ylo, g.yhi, g.xlo, g.xhi,
                                    self.tmp) and not bands:
                    return 0, None
        for b in bands:
            region.fill(r, self.OW, *b, 1)
        return _coarsen_to_pixels(policy, r, self.OH, self.OW, box, self.compute_mask, self.pix)


def _union(boxes):
    return (min(b[0] for b in boxes), max(b[1] for b in boxes),
            min(b[2] for b in boxes), max(b[3] for b in boxes))


def _reach_window(g, src, src_w, src_box, dst, dst_w, tmp):
    """Mark in dst what a window rule reaches from the marked src pixels; returns the box of
    dst it wrote, or None when nothing is reached."""
    box = g.out_box(src_box)
    if box is None or not region.reach(src, src_w, *src_box, dst, dst_w, *box, g.ylo, g.yhi, g.xlo, g.xhi, tmp):
        return None
    return box


def _coarsen_to_pixels(policy, reach, OH, OW, box, compute_mask, pix):
    """The policy's compute set for a reach mask, as a pixel list: (count, box holding them)."""
    box = policy.coarsen(reach, OH, OW, compute_mask, box)
    if box is None:
        return 0, None
    return region.to_pixels(compute_mask, OW, *box, pix), box


class StackConvStep(Step):
    """The conv reading a frame-stack input, split by input channel: each channel's partial conv
    (bias-free) is kept and updated only where that channel changed, and the output sums the
    partials in a fixed order. With a shifting stack, each frame's change is paid once per slot
    at one channel's cost instead of for the whole stack at every slot."""

    def __init__(self, node, x, y, partial_kernels, sum_kernel, reach, macs_per_slot_pixel, partials):
        """partials: (k, OH, OW, O), the kept per-channel partial convs the kernels write."""
        self.node, self.inputs, self.outputs = node, [x], [y]
        self.partials = partials
        self.partial_kernels, self.sum_kernel, self.reach = partial_kernels, sum_kernel, reach
        self.k = len(partial_kernels)
        self.OH, self.OW, npix = y.H, y.W, y.npix
        self.npix = self.k * npix  # stats count slot-pixels: each costs macs_per_pixel
        self.macs_per_pixel = macs_per_slot_pixel
        self.full_pix = np.arange(npix, dtype=np.int32)
        self.pix = np.empty(npix, np.int32)
        self.reach_mask = np.zeros(npix, np.uint8)
        self.compute_mask = np.zeros(npix, np.uint8)
        self.union = np.zeros(npix, np.uint8)
        self.tmp = np.zeros(self.OH * x.W, np.uint8)

    positional = True

    def kept(self) -> list:
        return [self.partials]

    def scratch(self) -> list:
        return [self.reach_mask, self.compute_mask, self.pix, self.full_pix, self.union, self.tmp]

    def kernels(self) -> list:
        return [*self.partial_kernels, self.sum_kernel]

    shiftable = False  # its per-channel partials would each move with a different frame

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        x, y = self.inputs[0], self.outputs[0]
        n_out = y.npix
        if full or x.nchanged == x.npix:
            if self.journal is not None:
                self.journal.whole(self.partials)
                self.journal.whole(y.rows())
            for kernel in self.partial_kernels:
                kernel.run(self.full_pix, n_out, None, -1.0, threads)
            self.sum_kernel.run(self.full_pix, n_out, None, -1.0, threads)
            y.mark_all()
            return self.npix
        y.clear()
        computed, union_box = 0, None
        g = self.reach
        for s, kernel in enumerate(self.partial_kernels):
            box = x.plane_boxes[s]
            obox = None if box is None else _reach_window(g, x.planes[s], x.W, box, self.reach_mask,
                                                          self.OW, self.tmp)
            if obox is None:
                continue
            n, cbox = _coarsen_to_pixels(policy, self.reach_mask, self.OH, self.OW, obox,
                                         self.compute_mask, self.pix)
            if not n:
                continue
            if self.journal is not None:
                self.journal.rows(self.partials[s].reshape(n_out, -1), self.pix, n)
            kernel.run(self.pix, n, None, -1.0, threads)
            computed += n
            region.or_box(self.union, self.compute_mask, self.OW, *cbox)
            union_box = cbox if union_box is None else _union([union_box, cbox])
        if union_box is None:
            return 0
        n = region.to_pixels(self.union, self.OW, *union_box, self.pix)
        if self.journal is not None:
            self.journal.rows(y.rows(), self.pix, n)
        self.sum_kernel.run(self.pix, n, y.mask, 0.0, threads)
        y.rescan(union_box)
        region.fill(self.union, self.OW, *union_box, 0)
        return computed


class ConcatStep(Step):
    """Channel concat. Inputs written in place (slices of this buffer) cost nothing but their
    masks; the others are copied where they changed."""

    def __init__(self, node, inputs, output, copies):
        """copies: [(kernel, input)] for the inputs not stored in place."""
        self.node, self.inputs, self.outputs, self.copies = node, inputs, [output], copies
        self.npix = output.npix
        self.full_pix = np.arange(self.npix, dtype=np.int32)
        self.pix = np.empty(self.npix, np.int32)

    positional = True

    def scratch(self) -> list:
        return [self.pix, self.full_pix]

    def kernels(self) -> list:
        return [k for k, _ in self.copies]

    def shift_rule(self):
        return sh.shift_rule(self.node, None, None)

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        out = self.outputs[0]
        if full:
            if self.journal is not None and self.copies:
                self.journal.whole(out.rows())
            for kernel, _ in self.copies:
                kernel.run(self.full_pix, self.npix, None, -1.0, threads)
            out.mark_all()
            return self.npix
        out.clear()
        changed = [x for x in self.inputs if x.nchanged]
        if not changed:
            return 0
        for x in changed:
            region.or_box(out.mask, x.mask, out.W, *x.box)
        for kernel, x in self.copies:
            if x.nchanged:
                n = region.to_pixels(x.mask, x.W, *x.box, self.pix)
                if self.journal is not None:
                    self.journal.rows(out.rows(), self.pix, n)
                kernel.run(self.pix, n, None, -1.0, threads)
        out.rescan(_union([x.box for x in changed]))
        return out.nchanged


class FallbackStep(Step):
    """An op without a kernel (numpy, or an onnxruntime partition): its whole outputs, recomputed
    when any input changed."""

    def __init__(self, node, inputs, outputs, macs=0):
        self.node, self.inputs, self.outputs = node, inputs, outputs
        self.fn = NUMPY_OPS[node.op]
        self.macs = macs
        self._nchw = None  # per spatial input, its NCHW copy's buffer (made on the first run)
        # an activation fused into this node (conv or add -> act) still has to be applied
        fused = node.attrs.get("act")
        self.post = None if not fused else Node("act", node.name + "/act", [], [], dict(fused))
        post = node.attrs.get("post")  # a conv's per-channel (scale, shift) after its activation
        rank = len(outputs[0].shape) if outputs else 4
        self.affine = None if post is None else tuple(
            np.asarray(a, np.float32).reshape((1, -1) + (1,) * (rank - 2)) for a in post)

    # a result that moved no more than the threshold keeps its reference
    takes_threshold = True

    def scratch(self) -> list:
        return list(self._nchw.values()) if self._nchw else []

    def _operand(self, k: int, tensor, threads: int) -> np.ndarray:
        """Input k as the numpy op takes it: a spatial tensor converted into a contiguous NCHW
        buffer kept for this input (outputs are copied into their storage, so one that is a
        view of it is safe), others as they are."""
        if tensor.kind != "spatial":
            return tensor.logical()
        if self._nchw is None:
            self._nchw = {}
        self._nchw[k] = tensor.channels_first(self._nchw.get(k), threads)
        return self._nchw[k]

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        if not full and not any(i.changed for i in self.inputs):
            for o in self.outputs:
                o.clear()
            return 0
        if self.journal is not None:
            for o in self.outputs:
                self.journal.whole(o.arr)
        values = self.fn(self.node, [self._operand(k, i, threads) for k, i in enumerate(self.inputs)])
        if self.post is not None:
            values = [NUMPY_OPS["act"](self.post, [v])[0] for v in values]
        if self.affine is not None:
            scale, shift = self.affine
            values = [v * scale + shift for v in values]
        for o, v in zip(self.outputs, values):
            o.store(v, track=not full, thr=self.thr)
        return 1


class GemvStep(Step):
    """Gemm / MatMul of one row by constant weights, on the conv micro-kernel: a 1x1 conv over a
    single pixel (fixed accumulation order, OpenMP over output blocks, no BLAS threads)."""

    def __init__(self, node, inp, out, kernel, macs):
        self.node, self.inputs, self.outputs, self.kernel = node, [inp], [out], kernel
        self.macs = macs
        self.pix = np.zeros(1, np.int32)

    def kernels(self) -> list:
        return [self.kernel]

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        if not full and not self.inputs[0].changed:
            self.outputs[0].clear()
            return 0
        if self.journal is not None:
            self.journal.whole(self.outputs[0].arr)
        self.kernel.run(self.pix, 1, None, -1.0, threads)
        self.outputs[0].changed = True
        return 1


class SpatialGemmStep(Step):
    """Flatten -> Gemm over a spatial tensor: per-pixel partial sums, recomputed where the input
    changed (the dense run uses the same split, so results stay bit-identical)."""

    def __init__(self, node, inp, out, kernel, macs_per_pixel, partial):
        """partial: (npix, npad), the kept per-pixel partial sums the kernel writes."""
        self.node, self.inputs, self.outputs, self.kernel = node, [inp], [out], kernel
        self.partial = partial
        self.macs_per_pixel = macs_per_pixel
        self.npix = inp.npix
        self.full_pix = np.arange(self.npix, dtype=np.int32)
        self.pix = np.empty(self.npix, np.int32)
        self.fast = driver.GemmStep(inp, kernel, partial, out.arr.reshape(-1), self.pix, self.full_pix)

    takes_threshold = True
    positional = True

    def compiled(self, policy) -> bool:
        """Whether an incremental run is the native one (driver.GemmStep), in run_incremental's
        chains."""
        return policy.name == "auto"

    def kept(self) -> list:
        return [self.partial]

    def scratch(self) -> list:
        return [self.pix, self.full_pix]

    def kernels(self) -> list:
        return [self.kernel]

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        x, out = self.inputs[0], self.outputs[0]
        if full or x.nchanged == self.npix:
            if self.journal is not None:
                self.journal.whole(self.partial)
                self.journal.whole(out.arr)
            self.kernel.run(self.full_pix, self.npix, threads)
            out.changed = True
            return self.npix
        if not x.nchanged:
            out.clear()
            return 0
        n = region.to_pixels(x.mask, x.W, *x.box, self.pix)
        if self.journal is not None:
            self.journal.rows(self.partial, self.pix, n)
            self.journal.whole(out.arr)
        self.kernel.run(self.pix, n, threads)
        out.changed = True
        return n


class ToSpatialStep(Step):
    """A plain 4-D / 3-D tensor feeding a spatial kernel: copied into channels-last storage. When
    it changed, it is compared with its reference position by position, as an input frame is,
    so what follows recomputes only the positions that moved."""

    def __init__(self, src, dst, ref=None):
        """ref: a Plain (C, H*W) reference of src's last values (None: a dense program's, which
        loads every frame whole)."""
        self.src, self.dst, self.ref = src, dst, ref
        self.inputs, self.outputs = [src], [dst]

    def shift_rule(self):
        return "still"  # loaded from a plain tensor: it moves with nothing

    def run(self, full: bool, policy, threads: int, bands=()) -> int:
        dst = self.dst
        if not full and not self.src.changed:
            dst.clear()
            return 0
        frame = self.src.arr.reshape(dst.C, -1)
        if self.journal is not None:
            self.journal.whole(dst.rows())
            if self.ref is not None:
                self.journal.whole(self.ref.arr)
        if full or self.ref is None:
            dst.load(self.src.logical(), threads)
            if self.ref is not None:
                np.copyto(self.ref.arr, frame)
            dst.mark_all()
            return 1
        if region.diff_frame(frame, self.ref.arr, 0.0, dst.mask, threads)[0]:
            region.apply_frame(frame, self.ref.arr, dst.buf, dst.off, 0.0, dst.mask, threads)
            dst.rescan((0, dst.H, 0, dst.W))
        else:  # the diff wrote every byte of the mask: all zero, nothing to scan
            dst.nchanged, dst.box = 0, None
        return 1
