"""What a session reports about its frames: the last frame's figures (stats), the MACs of any run
from the positions each step computed, and the change's share of the input positions."""
from __future__ import annotations

import numpy as np


def step_dense_macs(step) -> int:
    """A step's MACs on a full frame (runtime/steps.py's Step: per position or per run)."""
    return step.macs_per_pixel * step.npix + step.macs


class FrameStats:
    def __init__(self):
        self.program = None
        self.dense_macs = 0
        self._input_npix: dict = {}
        self._weights = None
        self._last = None  # (computed per step, diffs, full, elapsed, shift, backend, threads)
        self._stats: dict | None = {}

    def bind(self, program: list, input_npix: dict) -> None:
        """A compiled program, and the positions of each input that is diffed."""
        self.program = program
        self._input_npix = dict(input_npix)
        self.dense_macs = sum(step_dense_macs(s) for s in program)
        # per step: its MACs per computed position, and, for a step without positions, its MACs
        # whole when it ran
        self._weights = (np.array([s.macs_per_pixel for s in program], np.int64),
                         np.array([s.macs for s in program], np.int64))

    # --- recording (cheap: the dict is built only when read) -----------------------------------
    def record(self, computed, diffs, full: bool, elapsed: float, shift=None, backend: str = "reuserun",
               threads: int | None = None) -> None:
        self._last = (computed, diffs, full, elapsed, shift, backend, threads)
        self._stats = None

    def replace(self, stats: dict) -> None:
        """Figures of a frame that no program of this session computed (a whole-model or batched
        run)."""
        self._last, self._stats = None, stats

    @property
    def last_counts(self) -> list:
        """Positions each step computed in the last run."""
        return self._last[0]

    @property
    def last_diffs(self) -> dict:
        return self._last[1]

    @property
    def stats(self) -> dict:
        if self._stats is None:
            self._stats = self._build()
        return self._stats

    # --- MACs ---------------------------------------------------------------------------------
    def weights(self) -> tuple:
        return self._weights

    def macs(self, computed) -> int:
        """MACs of a run that computed computed[i] positions of step i."""
        return int(self._counts_to_macs(np.asarray(computed, np.int64)))

    def mac_fractions(self, counts: np.ndarray) -> np.ndarray:
        """mac_fraction of many runs at once: counts (runs, steps)."""
        return self._counts_to_macs(counts) / self.dense_macs if self.dense_macs else np.ones(len(counts))

    def _counts_to_macs(self, counts: np.ndarray):
        per_position, whole = self._weights
        return counts @ per_position + (counts > 0) @ whole

    def changed_fraction(self, diffs) -> float:
        """Changed positions over all positions of the diffed inputs; 1.0 for a model without
        one."""
        total = sum(self._input_npix[name] for name in diffs)
        return sum(nchanged for _, nchanged, _ in diffs.values()) / total if total else 1.0

    def _build(self) -> dict:
        computed, diffs, full, elapsed, shift, backend, threads = self._last
        macs = self.macs(computed)
        layers = [{"name": step.node.name, "op": step.node.op, "computed": n, "total": step.npix}
                  for step, n in zip(self.program, computed) if step.positional]
        return {
            "mac_fraction": macs / self.dense_macs if self.dense_macs else 1.0,
            "macs": macs,
            "dense_macs": self.dense_macs,
            "changed_fraction": 1.0 if full else self.changed_fraction(diffs),
            "shift": shift,
            "full": full,
            "backend": backend,
            "time_s": elapsed,
            "threads": threads,
            "layers": layers,
        }
