"""Calibrate approximate-mode thresholds on a clip, greedily front to back (as DeltaCNN does).

The input threshold comes first, then each layer in program order: each takes the largest
candidate (scaled by that layer's activation spread on the first frame) that keeps the error
against the dense outputs within budget over the whole clip, with the earlier choices in place.
The error is the relative L2 distance per frame and output, worst case over the clip; for
classifier-like outputs the argmax agreement is reported too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from reuserun.runtime.session import InferenceSession

CANDIDATES = (0.3, 0.1, 0.03, 0.01, 0.003)  # times the layer's activation std, largest first


@dataclass
class TuneResult:
    threshold: float
    layer_thresholds: dict = field(default_factory=dict)
    max_rel_l2: float = 0.0
    argmax_agreement: float | None = None
    mac_fraction: float = 1.0
    exact_mac_fraction: float = 1.0

    def to_json(self) -> str:
        return json.dumps({"threshold": self.threshold, "layer_thresholds": self.layer_thresholds,
                           "max_rel_l2": self.max_rel_l2, "argmax_agreement": self.argmax_agreement,
                           "mac_fraction": self.mac_fraction, "exact_mac_fraction": self.exact_mac_fraction},
                          indent=1)


def evaluate(model, frames, refs, threshold, layers, threads=None):
    """(worst relative L2 over frames and outputs, argmax agreement or None, mean mac_fraction)."""
    sess = InferenceSession(model, threshold=threshold, layer_thresholds=layers, threads=threads)
    worst, agree, n_cls, macs = 0.0, 0, 0, []
    name = sess.get_inputs()[0].name
    for f, ref in zip(frames, refs):
        outs = sess.run(None, {name: f})
        macs.append(sess.stats["mac_fraction"])
        for o, r in zip(outs, ref):
            worst = max(worst, float(np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12)))
            if r.ndim == 2 and r.shape[0] == 1 and r.shape[1] > 1:
                agree += int(o.argmax() == r.argmax())
                n_cls += 1
    return worst, (agree / n_cls if n_cls else None), float(np.mean(macs[1:])) if len(macs) > 1 else 1.0


def tune(model, frames, max_error: float, threads=None, progress=None) -> TuneResult:
    frames = list(frames)
    dense = InferenceSession(model, policy="dense", threads=threads)
    name = dense.get_inputs()[0].name
    refs = [dense.run(None, {name: f}) for f in frames]
    # each layer's activation spread on the first frame scales its candidates
    spread = {}
    for step in dense._program:
        if hasattr(step, "thr") and step.node is not None and step.outputs and hasattr(step.outputs[0], "logical"):
            spread[step.node.name] = float(np.std(step.outputs[0].logical())) or 1.0
    frame_std = float(np.std(frames[0])) or 1.0
    _, _, exact_mac = evaluate(model, frames, refs, 0.0, {}, threads)

    def ok(thr, layers):
        err, _, _ = evaluate(model, frames, refs, thr, layers, threads)
        return err <= max_error

    threshold = next((c * frame_std for c in CANDIDATES if ok(c * frame_std, {})), 0.0)
    layers: dict[str, float] = {}
    names = list(spread)
    for i, layer in enumerate(names):
        for c in CANDIDATES:
            trial = dict(layers, **{layer: c * spread[layer]})
            if ok(threshold, trial):
                layers = trial
                break
        if progress:
            progress(i + 1, len(names))
    err, agree, mac = evaluate(model, frames, refs, threshold, layers, threads)
    return TuneResult(threshold, layers, err, agree, mac, exact_mac)
