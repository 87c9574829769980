"""Frames that reuse cannot make cheaper: which of them run densely (by reuserun, measured, or by
an embedded onnxruntime session with dense_backend="onnxruntime"), and models that run whole in
onnxruntime because reuserun's kernels cannot."""
from __future__ import annotations

import time
import warnings

import numpy as np

from reuserun.ir import InputError, ModelError
from reuserun.runtime.dense_choice import DenseChoice
from reuserun.runtime.ort_backend import ort_session

# dense_backend="onnxruntime": a frame whose change covers at least this fraction of its input
# pixels reaches (almost) every position of a CNN, so reuse cannot save anything
DELEGATE_ABOVE = 0.5
# ... and once a frame's change reached this fraction of the dense MACs, frames that change at
# least half as much go to onnxruntime too (its dense kernels beat reuserun's partial update
# there: on MobileNetV3 a 1% object reaches 77% of the MACs)
HEAVY_MACS = 0.75
DENSE_BACKENDS = ("reuserun", "onnxruntime")


class DenseDelegate:
    """backend: dense_backend; exact: threshold 0 and no layer thresholds; policy: the policy's
    name; ort: the embedded onnxruntime session (backend "onnxruntime"), else None."""

    def __init__(self, backend: str, exact: bool, policy: str, ort=None):
        self.backend, self.exact, self.policy = backend, exact, policy
        self.ort = ort
        self.choice = DenseChoice()  # exact frames: dense or incremental, by measured time
        self.heavy_from = None  # changed fraction of the last frame whose change reached HEAVY_MACS
        self.last_heavy = False  # whether the last frame was heavy

    def reset(self) -> None:
        """A new scene: its changes are measured afresh."""
        self.heavy_from = None
        self.choice.reset()

    def takes(self, diffs: dict, changed: float) -> bool:
        """Whether onnxruntime computes this incremental frame whole: it is no shift, and most of
        it changed or it changed as much as a frame that reached most of the MACs. The first
        frame is reuserun's, so a stream starts with a cache; a still frame too (once caught up,
        still frames cost next to nothing)."""
        if self.backend != "onnxruntime" or self.policy == "dense" or not diffs:
            return False
        if any(moved is not None for _, _, moved in diffs.values()):
            return False
        heavy = self.heavy_from is not None and changed >= self.heavy_from / 2
        return changed >= DELEGATE_ABOVE or heavy

    def heavy(self, diffs: dict, changed: float, npix: dict) -> bool:
        """Whether reuserun computes this frame densely: an exact frame that changed every
        position of every spatial input (it reaches every position of every layer, so it runs
        dense rather than plan each step to find that out; under thresholds a changed position
        may keep some of its old values), or an exact auto frame that changed so much that a
        dense run has been measured faster (dense_choice.py): the same bits, less time."""
        if not diffs or not self.exact:
            return False
        if all(n == npix[name] for name, (_, n, _) in diffs.items()):
            return True
        if self.policy != "auto" or self.backend != "reuserun" or changed <= 0.0:
            return False
        return self.choice.dense(changed)

    def note_heavy(self, heavy: bool) -> bool:
        """Records whether this frame is heavy; returns whether the one before it was."""
        before, self.last_heavy = self.last_heavy, heavy
        return before

    def note(self, changed: float, elapsed: float, full: bool, mac_fraction: float) -> None:
        """A frame reuserun computed, with what it changed and reached (mac_fraction of the dense
        MACs) and its time (full: densely)."""
        if self.backend == "onnxruntime":
            # whether its change, this large, reached HEAVY_MACS (a dense frame says nothing
            # about that, a still frame neither)
            if not full and changed:
                self.heavy_from = changed if mac_fraction >= HEAVY_MACS else None
        elif changed:
            self.choice.note(changed, elapsed, full, mac_fraction)

    def note_dense(self, changed: float, elapsed: float) -> None:
        """A dense frame run without the caches."""
        self.choice.note(changed, elapsed, True)

    def run(self, names: list, feed: dict) -> list[np.ndarray]:
        return [np.asarray(o, np.float32) for o in self.ort.run(names, feed)]


class WholeModel:
    """A model reuserun's kernels cannot run (why), run whole in onnxruntime, every frame dense."""

    def __init__(self, model_bytes: bytes, why: str, threads: int, optimization_level):
        try:
            self.session = ort_session(model_bytes, threads, optimization_level)
        except Exception as e:  # onnxruntime cannot either: the model's own error, on one line
            raise ModelError(f"reuserun cannot run this model ({why}), and onnxruntime cannot either: "
                             + " ".join(str(e).split())) from None
        self.reason = why
        warnings.warn(f"reuserun runs this model whole in onnxruntime, every frame dense: {why} "
                      f"(strict=True refuses it instead)", stacklevel=5)

    def get_inputs(self) -> list:
        return self.session.get_inputs()

    def get_outputs(self) -> list:
        return self.session.get_outputs()

    def run(self, output_names, feed: dict) -> tuple[list, dict]:
        """The outputs, and the frame's stats."""
        t0 = time.perf_counter()
        names = None if not output_names else list(output_names)
        try:
            outs = self.session.run(names, feed)
        except Exception as e:  # onnxruntime's refusal of a feed, as reuserun's
            raise InputError(" ".join(str(e).split())) from None
        return outs, {"mac_fraction": 1.0, "changed_fraction": 1.0, "full": True, "shift": None,
                      "backend": "onnxruntime", "time_s": time.perf_counter() - t0, "layers": [],
                      "whole_model": self.reason}
