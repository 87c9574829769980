"""Carries out shift reuse for a session's program (the rules are in plan/shift.py).

For a frame that is the reference moved by D, `plan` works out each tensor's own shift, which
caches move and by how much, and what each step must compute; `apply` moves the caches. The
session then runs the steps as `plan` says and marks each moved tensor's exposed band changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reuserun.kernels import base, region
from reuserun.plan import marks
from reuserun.plan import shift as sh
from reuserun.runtime.driver import BANDS, FULL, NORMAL


@dataclass
class ShiftPlan:
    modes: list                      # per step: (NORMAL | FULL | BANDS, bands)
    moves: list                      # (storage, (dy, dx)) caches to copy over before the steps run
    exposed: list = field(default_factory=list)  # per step: [(storage, boxes, their union)] to mark changed
    rebases: list = field(default_factory=list)  # (owner, flat shift) buffers to slide instead
    kernels: list = field(default_factory=list)  # the kernels holding pointers into those buffers
    # per step: for a KernelStep with moving outputs, each output's exposed boxes (None where
    # it has none), for the step to mark itself; else None
    exposed_per_output: list = field(default_factory=list)
    moved: np.ndarray | None = None  # apply's (lo, hi, delta) per rebase, filled each frame
    slides_input: bool = False  # the moved input's cache is among the rebases
    shifts: dict = field(default_factory=dict)  # id(tensor) -> its own shift, None: recomputed whole

    def __post_init__(self):
        self.moved = np.zeros((len(self.rebases), 3), np.int64)


class Shifter:
    def __init__(self, graph, program, storage):
        self.program = program
        self.supported = all(step.shiftable for step in program)
        self.rules = [step.shift_rule() for step in program] if self.supported else []
        self.parent = _concat_parents(graph, storage)
        self.by_id = {id(s): s for step in program for s in (*step.inputs, *step.outputs) if s.kind == "spatial"}
        self._plans: dict = {}  # (input, shift) -> ShiftPlan: streams repeat one hop

    def plan(self, moved_input, d) -> ShiftPlan:
        key = (id(moved_input), tuple(d))
        if key not in self._plans:
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = self._make_plan(moved_input, d)
        return self._plans[key]

    def _make_plan(self, moved_input, d) -> ShiftPlan:
        shifts = {id(moved_input): tuple(d)}
        modes, moves, exposed = [], [], []

        def of(s):
            return shifts.get(id(s), (0, 0)) if s.kind == "spatial" else (0, 0)

        for step, rule in zip(self.program, self.rules):
            ins = {of(s) for s in step.inputs}
            outs = [o for o in step.outputs if o.kind == "spatial"]
            if ins <= {(0, 0)}:
                modes.append((NORMAL, ()))
                exposed.append([])
                continue
            out_d, mode, bands = None, FULL, ()
            if rule not in (None, "fixed", "still") and len(ins) == 1 and None not in ins:
                (din,) = ins
                if rule == "same":
                    out_d, mode = din, NORMAL
                else:
                    out_d, bands = rule(din)
                    mode = FULL if out_d is None else BANDS
            if rule == "fixed":
                out_d = (0, 0)  # plain outputs: compared whole, they do not move
            for o in outs:
                shifts[id(o)] = out_d
            modes.append((mode, bands))
            moving = out_d is not None and out_d != (0, 0) and mode != FULL
            exposed.append([(o, boxes, _union(boxes)) for o in outs
                            for boxes in [sh.exposed(out_d, o.H, o.W)] if boxes] if moving else [])
        # a buffer whose tensors all move alike (or are recomputed whole) slides its origin;
        # any other moving tensor is copied over in place
        moving = {}
        for s_id, dd in shifts.items():
            st = self.by_id.get(s_id)
            # the input slides too when it can (then only its changed pixels are written);
            # else the session loads it whole
            if st is not None and dd is not None and dd != (0, 0) and (st is not moved_input or st.slack):
                moving[s_id] = (st, dd)
        rebases, seen = [], set()
        for st, dd in moving.values():
            owner = st.owner
            if id(owner) in seen:
                continue
            seen.add(id(owner))
            if owner.slack and all(shifts.get(id(m), (0, 0)) in (dd, None) for m in owner.members):
                rebases.append((owner, dd[0] * owner.W + dd[1]))
        for s_id, (st, dd) in moving.items():
            if any(st.owner is o for o, _ in rebases):
                continue
            p = self.parent.get(s_id)
            if p is not None and shifts.get(id(p)) == dd:
                continue  # the enclosing concat's buffer moves as a whole
            moves.append((st, dd))
        owners = {id(o) for o, _ in rebases}
        kernels = [k for step in self.program
                   if any(s.kind == "spatial" and id(s.owner) in owners for s in (*step.inputs, *step.outputs))
                   for k in step.kernels()]
        per_output = []
        for step, ex in zip(self.program, exposed):
            boxes = {id(o): b for o, b, _ in ex}
            per_output.append([boxes.get(id(o)) for o in step.outputs]
                              if ex and step.fast is not None else None)
        slides_input = any(o is moved_input for o, _ in rebases)
        return ShiftPlan(modes, moves, exposed, rebases, kernels, per_output, slides_input=slides_input,
                         shifts=shifts)

    def apply(self, plan: ShiftPlan, threads: int) -> None:
        if plan.rebases:
            marks.rebase_all(plan.rebases, plan.moved)
            base.relocate_all(plan.kernels, plan.moved)
        for st, (dy, dx) in plan.moves:
            region.move(st.buf, st.off, st.C, dy, dx, threads)


class ShiftDetector:
    """Whether a frame of one spatial input is the reference translated: what changed, for
    shift reuse. Streams move at a steady hop or scroll speed, so the last shift found is tried
    first; a full search (plan/shift.detect, a few ms on a large frame) backs off after misses."""

    def __init__(self, npix: int):
        self.last = None  # the shift the last frame was found to be
        self.misses = self.skip = 0
        self.scratch = np.empty(npix, np.uint8)

    def reset(self) -> None:
        self.last, self.misses, self.skip = None, 0, 0

    def verify_last(self, frame, ref, H: int, W: int, mask, threads: int):
        """(changed count, non-finite values) of the frame against the reference moved by the
        last shift, marking mask; None when there is no last shift."""
        if self.last is None:
            return None
        return region.diff_shifted(frame, ref, H, W, self.last[0], self.last[1], mask, threads)

    def search(self, frame, ref, C: int, H: int, W: int, nchanged: int, mask, threads: int):
        """(shift, changed count) when the (C, H*W) frame is the reference translated and that
        leaves less than half of its nchanged positions changed; mask then holds the shifted
        diff. After each miss in a row the next 1, 3, 7, then 15 searches are skipped: a stream
        that never moves pays for it rarely, one that starts scrolling is caught within 16
        frames (the frames in between are computed as usual)."""
        if self.skip > 0:
            self.skip -= 1
            self.last = None
            return None
        best = None
        for cands in ([self.last] if self.last else [], None):
            if cands is None:
                cands = sh.detect(frame.reshape(C, H, W), ref.reshape(C, H, W))
            for d in cands:
                count, _ = region.diff_shifted(frame, ref, H, W, d[0], d[1], self.scratch, threads)
                if count < nchanged // 2 and (best is None or count < best[1]):
                    best = (d, count)
                    np.copyto(mask, self.scratch)
            if best is not None:
                break
        self.last = best[0] if best else None
        self.misses = 0 if best else self.misses + 1
        self.skip = 0 if best else min(2 ** self.misses, 16) - 1
        return best


def _union(boxes):
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def _concat_parents(graph, storage) -> dict:
    """id(storage) of a tensor kept as a channel slice of a concat's buffer -> that concat's storage."""
    parents = {}
    for node in graph.nodes:
        if node.op != "concat":
            continue
        out = storage.get(node.outputs[0])
        if out is None or out.kind != "spatial":
            continue
        for name in node.inputs:
            s = storage.get(name)
            if s is not None and s.kind == "spatial" and s.buf is out.buf and s is not out:
                parents[id(s)] = out
    return parents
