"""Per-step profile of a session's frames: time, MACs, GMAC/s and positions computed per step,
with the rest of a frame's time (validation, change detection, outputs) as its overhead. A
shifted frame's steps run in one native call and count as its overhead.

A profiled frame runs its steps one call each (the session's own propagation batches chains of
compiled steps into one call without the GIL); the steps and their arithmetic are the same, so
the outputs are bit-identical to an unprofiled run."""
from __future__ import annotations

import time

import numpy as np

from reuserun.runtime import driver


class StepProfiler:
    """trace: an ort_api.ProfileTrace that also gets one event per step run, or None."""

    def __init__(self, steps: list, trace=None):
        self.steps = steps
        self.trace = trace
        n = len(steps)
        self.seconds = np.zeros(n)
        self.positions = np.zeros(n, np.int64)
        self.runs = np.zeros(n, np.int64)
        self.frames = 0
        self.frame_seconds = 0.0

    def run_full(self, policy, threads: int) -> list[int]:
        computed = []
        for i, step in enumerate(self.steps):
            t0 = time.perf_counter()
            computed += driver.run_full([step], policy, threads)
            self._add(i, t0, time.perf_counter(), computed[-1])
        return computed

    def run_incremental(self, fast: list, policy, threads: int, journal) -> list[int]:
        computed = []
        for i, (step, f) in enumerate(zip(self.steps, fast)):
            t0 = time.perf_counter()
            computed += driver.run_incremental([step], [f], policy, threads, journal)
            self._add(i, t0, time.perf_counter(), computed[-1])
        return computed

    def _add(self, i: int, t0: float, t1: float, positions: int) -> None:
        self.seconds[i] += t1 - t0
        self.positions[i] += positions
        self.runs[i] += positions > 0
        if self.trace is not None:
            node = self.steps[i].node
            name, op = (node.name, node.op) if node is not None else (f"step{i}", "copy")
            self.trace.add("Node", f"{name}_kernel_time", t0, t1,
                           {"op_name": op, "provider": "CPUExecutionProvider", "positions": str(positions)})

    def frame(self, seconds: float) -> None:
        self.frames += 1
        self.frame_seconds += seconds

    def table(self, macs_per_position, macs_whole) -> dict:
        """Per step, per frame on average: ms, MACs, GMAC/s, positions computed and share of the
        frame's time; steps sorted as they run."""
        frames = max(self.frames, 1)
        macs = self.positions * macs_per_position + self.runs * macs_whole
        total = self.frame_seconds / frames
        rows = []
        for i, step in enumerate(self.steps):
            node = step.node
            s = self.seconds[i] / frames
            rows.append({
                "step": i,
                "name": node.name if node is not None else type(step).__name__,
                "op": node.op if node is not None else "copy",
                "output": node.outputs[0] if node is not None and node.outputs else None,
                "act": ((node.attrs.get("act") or {}).get("kind") if node is not None else None),
                "ms": 1e3 * s,
                "macs": int(macs[i] // frames),
                "gmac_s": (macs[i] / frames) / s / 1e9 if s > 0 else 0.0,
                "positions": int(self.positions[i] // frames),
                "total_positions": int(step.npix),
                "share": s / total if total > 0 else 0.0,
            })
        steps_ms = sum(r["ms"] for r in rows)
        return {"frames": self.frames, "frame_ms": 1e3 * total, "steps_ms": steps_ms,
                "overhead_ms": 1e3 * total - steps_ms, "steps": rows}
