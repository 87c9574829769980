"""The path of one frame through a bound session: read and diff it (runtime/inputs.py), decide
who computes it and how (runtime/delegate.py), run the program (runtime/executor.py), return the
outputs and record the frame's figures (runtime/frame_stats.py). Variants of the reference go
through runtime/variants.py.

A FrameLoop is made when a session's input shapes are bound, and holds the state between frames:
whether the caches are fresh (the next frame is computed whole) or behind the reference (frames
were computed elsewhere), and a version that counts the frames that changed the caches."""
from __future__ import annotations

import time

import numpy as np

from reuserun.ir import InputError
from reuserun.runtime.compiler import frame_stack_inputs
from reuserun.runtime.delegate import DenseDelegate
from reuserun.runtime.executor import Executor
from reuserun.runtime.frame_stats import FrameStats
from reuserun.runtime.inputs import Frame, Inputs
from reuserun.runtime.thread_choice import ThreadChoice
from reuserun.runtime.variants import Variants

# spare room behind each cache, as a fraction of it, for sessions that may reuse shifted frames:
# a shift then slides the caches' origins, and copies them once per SHIFT_SLACK * size / shift
SHIFT_SLACK = 0.25


class FrameLoop:
    """model: the compiled model; names: the model's input names; opts: the session's options
    (policy_name, policy, threshold, layer_thresholds, shift, frame_stack, accept_nan,
    dense_backend), metadata: the model's metadata_props; profile: time each step (trace: a
    ProfileTrace for their events, or None); ort: the embedded onnxruntime session or None."""

    def __init__(self, model, names: list, input_shapes: dict, opts: dict, metadata: dict, stats: FrameStats,
                 profile: bool = False, trace=None, ort=None):
        graph = self.graph = model.graph
        self.model = model
        self.stats = stats
        self.dense = opts["policy_name"] == "dense"
        stacks = frame_stack_inputs(graph, opts["frame_stack"], metadata)
        exact = opts["threshold"] == 0.0 and not opts["layer_thresholds"]

        def shift_allowed(spatial_inputs: int) -> bool:
            # exact, incremental sessions with one spatial input that is not a frame stack
            return opts["shift"] and exact and not stacks and not self.dense and spatial_inputs == 1

        may_shift = shift_allowed(sum(len(s) in (3, 4) for s in input_shapes.values()))
        self.executor = ex = Executor(graph, model, stacks, SHIFT_SLACK if may_shift else 0.0, opts["policy"],
                                 profile, trace)
        self.inputs = Inputs(names, input_shapes, ex.storage, graph.channels_last_inputs, stacks,
                             opts["threshold"], opts["accept_nan"])
        ex.apply_thresholds(opts["layer_thresholds"])
        self.inputs.shift_ok = ex.shifter.supported and shift_allowed(len(self.inputs.spatial))
        self._npix = {n: st.npix for n, st in self.inputs.spatial.items()}
        stats.bind(ex.program, self._npix)
        self.delegate = DenseDelegate(opts["dense_backend"], exact, opts["policy_name"], ort)
        self.variants = Variants(self.inputs, ex)
        # dense frames past the first run without the caches; not for frame stacks (their
        # partials are caches) nor under the profiler
        self._without_caches_ok = not self.dense and not stacks and not profile
        self.fresh = True
        self.thread_choice = None  # made for the thread count of the first frame (ThreadChoice)
        self.behind = False  # frames were computed elsewhere: the caches hold an older one
        self.version = 0  # counts frames that changed the caches, so forks know when they are stale

    def reset(self) -> None:
        self.fresh = True
        self.delegate.reset()
        self.inputs.reset()

    # --- frames -------------------------------------------------------------------------------
    def run(self, names: list, feed: dict, threads: int, into) -> list[np.ndarray]:
        """The outputs named for this frame (into: per output, a buffer to write it into, or
        None); a refused frame leaves everything as it was."""
        t0 = time.perf_counter()
        if self.thread_choice is None or self.thread_choice.threads != threads:
            self.thread_choice = ThreadChoice(threads)
        frame = self.inputs.read(feed, self.fresh or self.dense, self.inputs.shift_ok, self.thread_choice.current)
        threads = self.thread_choice.pick()  # after the checks: a refused frame changes nothing
        diffs = frame.diffs
        changed = self.stats.changed_fraction(diffs) if diffs else 0.0
        if not self.fresh and self.delegate.takes(diffs, changed):
            return copy_into(self._run_delegated(names, frame, t0), into)
        heavy = frame.moved is None and self.delegate.heavy(diffs, changed, self._npix)
        # a run of heavy frames: all but the first run without the caches (a lone one, a scene
        # cut, keeps them, so the frames after it run incrementally)
        if self.delegate.note_heavy(heavy) and heavy and self._without_caches_ok and not self.fresh:
            return copy_into(self._run_without_caches(names, frame, changed, t0, threads), into)
        full = self.fresh or self.behind or self.dense or heavy
        moved = None if full else frame.moved  # (input, shift) when the frame is a shift
        ex = self.executor
        try:
            plan = ex.shift_plan(*moved) if moved else None
            if not self.inputs.accept(frame, full, plan is not None and plan.slides_input, threads):
                computed = ex.still  # every cache is current
            else:
                self.version += 1  # forks made for variants are stale from here on
                if plan is not None:
                    ex.move_caches(plan, threads)
                    if plan.slides_input:
                        self.inputs.slide(moved[0], moved[1], frame.values[moved[0]], threads)
                    computed = ex.run_shifted(plan, threads)
                else:
                    computed = ex.run_full(threads) if full else ex.run_incremental(threads)
                ex.update_mirrors(full, threads)
        except BaseException:
            self.fresh = True  # a half-updated cache is never reused
            self.version += 1
            raise
        first = self.fresh
        self.fresh = self.behind = False
        outs = [ex.output(n, into[i] if into is not None else None) for i, n in enumerate(names)]
        elapsed = time.perf_counter() - t0
        self.stats.record(computed, diffs, full, elapsed, moved[1] if moved else None, threads=threads)
        if ex.profiler is not None:
            ex.profiler.frame(elapsed)
        computing = computed is not ex.still
        fraction = 1.0 if full else (self.stats.macs(computed) / max(1, self.stats.dense_macs) if computing else 0.0)
        # a frame that tries the other thread count says nothing of the dense choice at this one
        if not self.thread_choice.is_try(threads) and (
                self.delegate.backend == "onnxruntime" or (diffs and moved is None and computing)):
            self.delegate.note(changed, time.perf_counter() - t0, full, fraction)
        if not first and computing:  # the first frame touches every buffer the first time
            self.thread_choice.note(threads, elapsed, fraction)
        return outs

    def _run_delegated(self, names: list, frame: Frame, t0: float) -> list[np.ndarray]:
        """onnxruntime's outputs for the frame, which becomes the reference the next frame is
        diffed against; the caches stay as they were, behind it."""
        outs = self.delegate.run(names, {n: frame.as_given.get(n, v) for n, v in frame.values.items()})
        self.inputs.set_references(frame.values)
        self.behind = True
        self.version += 1
        self.stats.record(self.executor.all_positions(), frame.diffs, False, time.perf_counter() - t0,
                          backend="onnxruntime")
        return outs

    def _run_without_caches(self, names, frame: Frame, changed: float, t0: float, threads: int):
        """A heavy frame after another: computed densely on the executor's scratch program. The
        frame becomes the reference the next one is diffed against, and the caches stay behind
        it: the next frame that changes less is first computed densely with them (as after a
        frame handed to onnxruntime)."""
        first = not self.executor.has_scratch
        self.behind = True  # from the first reference written on, whatever happens next
        self.version += 1
        try:
            self.inputs.set_references(frame.values)
            outs = self.executor.run_without_caches(frame.values, names, threads)
        except BaseException:
            self.fresh = True  # the references may be half written: start over
            raise
        elapsed = time.perf_counter() - t0
        self.stats.record(self.executor.all_positions(), frame.diffs, True, elapsed, threads=threads)
        if not first:  # that frame's time is mostly compiling
            if not self.thread_choice.is_try(threads):
                self.delegate.note_dense(changed, elapsed)
            self.thread_choice.note(threads, elapsed, 1.0)
        return outs

    def catch_up(self, threads: int) -> None:
        """Compute the reference frame densely, so caches left behind hold it again."""
        if not self.behind:
            return
        try:
            self.inputs.load_references(threads)
            self.executor.run_full(threads)
            self.executor.update_mirrors(True, threads)
        except BaseException:
            self.fresh = True
            raise
        self.behind = False

    def output_names(self, requested) -> list[str]:
        """The outputs a run names (None or []: all), checked."""
        outputs = self.graph.outputs
        if not requested:
            return list(outputs)
        if isinstance(requested, (str, bytes)) or not isinstance(requested, (list, tuple)):
            raise InputError(f"output_names must be None or a list of output names, got {requested!r}")
        unknown = [n for n in requested if n not in outputs]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are {outputs}")
        return list(requested)

    def check_bound(self, names: list, into: list, dtype) -> None:
        """Bound output buffers must be of the output's shape and the session's dtype."""
        for name, buf in zip(names, into):
            want = tuple(self.graph.tensors[name].shape)
            if buf is not None and (buf.shape != want or buf.dtype != dtype):
                raise InputError(f"output {name!r} is bound to a {buf.dtype} buffer of shape {buf.shape}; "
                                 f"it needs {np.dtype(dtype)} of shape {want}")

    # --- variants -----------------------------------------------------------------------------
    def run_variant(self, names: list, feed: dict, changed, threads: int) -> list[np.ndarray]:
        if isinstance(changed, (list, tuple)) and len(self.inputs.specs) == 1 and feed.keys() == self.inputs.names:
            # declared boxes of a well-formed frame: the native loop, where the model allows it
            name, shape, st = self.inputs.specs[0]
            v = feed[name]
            if st.kind == "spatial" and type(v) is np.ndarray and v.dtype == np.float32 and v.shape == shape:
                got = self.declared_batch(names, [changed], v, 0.0, 0, threads)
                if got is not None:
                    return got[0]
        t0 = time.perf_counter()
        frame = self.inputs.read(feed, False, False, threads, self.inputs.declared_masks(changed))
        self.catch_up(threads)
        outs, computed = self.variants.run(frame, names, threads)
        self.stats.record(computed, frame.diffs, False, time.perf_counter() - t0)
        return outs

    def declared_batch(self, names: list, boxes: list, frames, fill: float, first: int, threads: int):
        t0 = time.perf_counter()
        got = self.variants.declared_batch(names, boxes, frames, fill, first, threads,
                                           lambda: self.catch_up(threads))
        if got is None:
            return None
        results, counts, name, marked = got
        if len(boxes):
            self.stats.record(counts[-1].tolist(), {name: (None, marked, None)}, False,
                              (time.perf_counter() - t0) / len(boxes))
        return results, counts

    # --- state --------------------------------------------------------------------------------
    def copy_to(self, twin: FrameLoop, part: int = 0, parts: int = 1) -> None:
        """Make twin's caches (the same program) this loop's; part of parts: this call copies every
        parts-th array, largest first, so that many threads can share the copy."""
        pairs = self.executor.copy_pairs(twin.executor) + self.inputs.copy_pairs(twin.inputs)
        pairs.sort(key=lambda p: -p[1].nbytes)
        for dst, src in pairs[part::parts]:
            np.copyto(dst, src)
        if part == 0:
            twin.fresh, twin.behind = self.fresh, self.behind

    def state(self) -> dict:
        def frozen(a):
            v = a.view()
            v.flags.writeable = False
            return v

        tensors, masks = {}, {}
        for name, st in self.executor.storage.items():
            if st.kind == "spatial":
                tensors[name], masks[name] = st.logical(), frozen(st.mask)
            elif st.kind == "plain":
                tensors[name] = frozen(st.arr)
        refs = {n: frozen(r.reshape(self.graph.tensors[n].shape)) for n, r in self.inputs.references.items()}
        kept = {i: [frozen(a) for a in step.kept()] for i, step in enumerate(self.executor.program) if step.kept()}
        outputs = {n: frozen(m) for n, m in self.executor.output_copies().items()}
        return {"tensors": tensors, "masks": masks, "references": refs, "kept": kept, "outputs": outputs,
                "fresh": self.fresh}

    def memory(self) -> dict:
        inputs = set(self.graph.inputs)
        activations = sum(4 * int(np.prod(t.shape)) for n, t in self.graph.tensors.items()
                          if not t.is_const and n not in inputs)
        weights = sum(sum(a.nbytes for a in (v if isinstance(v, tuple) else (v,)) if isinstance(a, np.ndarray))
                      for v in self.model.packed.values())
        return {**self.executor.memory(), "activations": activations, "weights": weights}


def copy_into(outs: list, into) -> list:
    """Outputs copied into the bound buffers where there are any."""
    if into is not None:
        for i, buf in enumerate(into):
            if buf is not None:
                np.copyto(buf, outs[i])
                outs[i] = buf
    return outs
