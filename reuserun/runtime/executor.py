"""The executor: runs a session's compiled program over its caches (full, incremental and shifted
frames, dense frames without the caches) and keeps the channels-first copies of spatial outputs.

It knows nothing of frames or of what changed in them: the inputs' caches and masks are written
before it runs (runtime/inputs.py), and each step reads its inputs' marks (runtime/steps.py)."""
from __future__ import annotations

import numpy as np

from reuserun import ir
from reuserun.kernels import region
from reuserun.runtime import driver
from reuserun.runtime.compiler import Compiler
from reuserun.runtime.profiler import StepProfiler
from reuserun.runtime.shifter import Shifter, ShiftPlan
from reuserun.runtime.storage import aligned_zeros, slide_window


class Executor:
    """graph, model: the compiled model (runtime/compiled.py); stacks: frame-stack inputs; slack:
    spare room behind each cache for shift reuse; profile: run each step on its own and time it,
    trace: an ort_api.ProfileTrace that also gets an event per step, or None."""

    def __init__(self, graph: ir.Graph, model, stacks: frozenset, slack: float, policy, profile: bool = False,
                 trace=None):
        self.graph, self.policy = graph, policy
        self._packed = model.packed
        self.program, self.storage = Compiler(graph, model.packed, stacks, slack=slack).build()
        self.profiler = StepProfiler(self.program, trace) if profile else None
        self.shifter = Shifter(graph, self.program, self.storage)
        storage = self.storage
        # channels-first copies of spatial outputs, each in a buffer with its cache's slack, so
        # a shifted frame slides it as the cache slides (move_caches)
        self._mirror_bufs = {n: [aligned_zeros(storage[n].C * storage[n].npix + storage[n].owner.slack), 0]
                             for n in graph.outputs if storage[n].kind == "spatial"}
        self._mirrors = {n: (storage[n], buf[:storage[n].C * storage[n].npix].reshape(graph.tensors[n].shape))
                         for n, (buf, _) in self._mirror_bufs.items()}
        self.still = [0] * len(self.program)  # a still frame's positions computed
        self._fast = None  # per step, its compiled incremental path under this policy
        self._slow = None  # the steps without one
        self._scratch = None  # the program on shared buffers (run_without_caches), made when first needed

    # --- runs ---------------------------------------------------------------------------------
    def run_full(self, threads: int) -> list[int]:
        """Every step recomputed whole; returns the positions each computed."""
        if self.profiler is not None:
            return self.profiler.run_full(self.policy, threads)
        return driver.run_full(self.program, self.policy, threads)

    def run_incremental(self, threads: int, journal=None) -> list[int]:
        """Every step's incremental update; journal: the undo log the steps record into (variants;
        the steps without a compiled path must hold it too, see slow_steps)."""
        if self.profiler is not None and journal is None:
            return self.profiler.run_incremental(self.fast_steps(), self.policy, threads, None)
        return driver.run_incremental(self.program, self.fast_steps(), self.policy, threads, journal)

    def shift_plan(self, input_name: str, d) -> ShiftPlan:
        return self.shifter.plan(self.storage[input_name], d)

    def move_caches(self, plan: ShiftPlan, threads: int) -> None:
        """Slide or copy every cache the plan moves, and the channels-first output copies with
        them (every channel plane alike, as their cache slid: then only their marked positions
        need converting, as the exposed band is marked)."""
        self.shifter.apply(plan, threads)
        for name, (st, mirror) in self._mirrors.items():
            d = plan.shifts.get(id(st))
            if not d or d == (0, 0):
                continue
            view = slide_window(self._mirror_bufs[name], st.owner.slack, st.C * st.npix, d[0] * st.W + d[1])
            if view is not None:
                self._mirrors[name] = (st, view.reshape(mirror.shape))

    def run_shifted(self, plan: ShiftPlan, threads: int) -> list[int]:
        """The steps of a frame that is the reference moved, once the caches have moved."""
        return driver.run_shifted(self.program, self.fast_steps(), plan.modes, plan.exposed,
                                  plan.exposed_per_output, self.policy, threads)

    def run_without_caches(self, values: dict, names: list, threads: int) -> list[np.ndarray]:
        """A dense run through the scratch program: the same kernels on buffers shared between
        tensors once dead (Compiler(reuse=True)), so it touches a fraction of the memory that
        writing every cache would; the same bits as a dense run. The caches are left as they
        were. Returns the outputs named."""
        if self._scratch is None:  # most sessions never need it
            self._scratch = Compiler(self.graph, self._packed, reuse=True).build()
        steps, storage = self._scratch
        for name, v in values.items():
            if storage[name].kind == "spatial":
                storage[name].load(v, threads)
            else:
                storage[name].store(v, track=False)
        driver.run_full(steps, self.policy, threads)
        outs = []
        for name in names:
            st = storage[name]
            if st.kind == "spatial":
                out = st.channels_first(threads=threads)
            else:
                out = np.array(st.logical(), dtype=np.float32, copy=True, order="C")
            outs.append(out)
        return outs

    @property
    def has_scratch(self) -> bool:
        return self._scratch is not None

    def all_positions(self) -> list[int]:
        """Per step, its positions: what a dense run computes."""
        return [step.npix for step in self.program]

    def fast_steps(self) -> list:
        """Per step, its compiled incremental path (a driver.NativeStep) under this policy, or None."""
        if self._fast is None:
            self._fast = [step.fast if step.fast is not None and step.compiled(self.policy) else None
                          for step in self.program]
        return self._fast

    def slow_steps(self) -> list:
        """The steps without a compiled incremental path under this policy."""
        if self._slow is None:
            self._slow = [step for step, f in zip(self.program, self.fast_steps()) if f is None]
        return self._slow

    def apply_thresholds(self, table: dict) -> None:
        """Per-layer thresholds {node or output name: T, "default": T}; a name that is no layer
        of the program is refused."""
        table = dict(table)
        default = table.pop("default", 0.0)
        known = set()
        for step in self.program:
            if not step.takes_threshold or step.node is None:
                continue
            names = [step.node.name] + [o.name for o in step.outputs]
            known.update(names)
            step.thr = next((table[n] for n in names if n in table), default)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"layer_thresholds names no layer of this model: {unknown}")

    # --- outputs ------------------------------------------------------------------------------
    def update_mirrors(self, full: bool, threads: int) -> None:
        """Channels-first copies of spatial outputs, updated where they changed. Unmarked
        positions already hold the cache's values, so a one-channel output (a mask or score map)
        copies its changed rows whole: a plain copy beats checking every mark."""
        for st, mirror in self._mirrors.values():
            if full or st.nchanged:
                lo, hi = (0, st.npix) if full else (st.box[0] * st.W, st.box[1] * st.W)
                region.to_channels_first(st.buf, st.off, st.C, None if full or st.C == 1 else st.mask,
                                         mirror.reshape(st.C, -1), threads, lo, hi)

    def output(self, name: str, into: np.ndarray | None = None) -> np.ndarray:
        """An output's values, NCHW: a copy, or written into `into`."""
        src = self._mirrors[name][1] if name in self._mirrors else self.storage[name].logical()
        if into is not None:
            np.copyto(into, src)
            return into
        return np.array(src, dtype=np.float32, copy=True, order="C")

    def output_copies(self) -> dict:
        """{spatial output: its channels-first copy}."""
        return {n: mirror for n, (_, mirror) in self._mirrors.items()}

    # --- state --------------------------------------------------------------------------------
    def copy_pairs(self, twin: Executor) -> list:
        """(twin's array, this one's) for every cache, kept partial sum and output copy."""
        pairs = [(twin.storage[n].buf, st.buf) for n, st in self.storage.items() if st.kind == "spatial"]
        pairs += [(twin.storage[n].arr, st.arr) for n, st in self.storage.items() if st.kind == "plain"]
        pairs += [(theirs, mine) for step, twin_step in zip(self.program, twin.program)
                  for mine, theirs in zip(step.kept(), twin_step.kept())]
        pairs += [(twin._mirrors[n][1], mirror) for n, (_, mirror) in self._mirrors.items()]
        return pairs

    def memory(self) -> dict:
        """Bytes held: caches, their masks, the steps' scratch, the output copies and the
        buffers of the program that runs without the caches (0 until it is first needed)."""
        masks = sum(st.mask.nbytes for st in self.storage.values() if st.kind == "spatial")
        scratch = sum(a.nbytes for step in self.program for a in step.scratch())
        without = 0 if self._scratch is None else _buffer_bytes(self._scratch[1])
        return {"cache": _buffer_bytes(self.storage), "masks": masks, "scratch": scratch,
                "mirrors": sum(buf.nbytes for buf, _ in self._mirror_bufs.values()), "without_caches": without}


def _buffer_bytes(storage: dict) -> int:
    """Bytes of the distinct buffers the tensors of a storage live in."""
    seen, total = set(), 0
    for st in storage.values():
        if st.kind == "const":
            continue
        arr = st.buf if st.kind == "spatial" else st.arr
        base = arr.base if arr.base is not None else arr
        if id(base) not in seen:
            seen.add(id(base))
            total += base.nbytes
    return total
