"""Calibrate approximate-mode thresholds on a clip.

Every threshold is a multiple of its tensor's spread (the standard deviation of the input
frame, or of the layer's activations on the last tuning frame). Two passes, each keeping the
error against the dense outputs within budget over the tuning frames:
  1. uniform: one multiple for the input and every layer, the largest that fits. Giving the
     input the whole budget first (plain greedy) leaves none for the layers, where truncation
     stops noise that the first convs have already averaged;
  2. greedy, front to back (as DeltaCNN does): each layer's multiple grows x10, else x3, where
     that fits, with the earlier choices in place.
The error is the relative L2 distance per frame and output, worst case over the clip; for
classifier-like outputs the argmax agreement is reported too. The last quarter of the clip (from
8 frames on) is held out: tuning never sees it, and its worst error, measured with the chosen
thresholds as the clip plays on, says how well they carry over to frames they were not fit to.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from reuserun.runtime.session import InferenceSession

UNIFORM = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002)  # times the spread, largest first
GROWTH = (10.0, 3.0)  # the greedy pass tries each layer's multiple times these, largest first


@dataclass
class TuneResult:
    threshold: float
    layer_thresholds: dict = field(default_factory=dict)
    max_rel_l2: float = 0.0
    argmax_agreement: float | None = None
    mac_fraction: float = 1.0
    exact_mac_fraction: float = 1.0
    holdout_rel_l2: float | None = None  # worst error on the held-out frames

    def to_json(self) -> str:
        return json.dumps({"threshold": self.threshold, "layer_thresholds": self.layer_thresholds,
                           "max_rel_l2": self.max_rel_l2, "argmax_agreement": self.argmax_agreement,
                           "mac_fraction": self.mac_fraction, "exact_mac_fraction": self.exact_mac_fraction,
                           "holdout_rel_l2": self.holdout_rel_l2}, indent=1)


def frame_error(outs, refs) -> tuple[float, list[int]]:
    """One frame against the dense outputs: the worst relative L2 over its outputs, and for each
    output that is a row of class scores whether the argmax agrees (1 or 0)."""
    worst = max(float(np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12)) for o, r in zip(outs, refs))
    agree = [int(o.argmax() == r.argmax()) for o, r in zip(outs, refs)
             if r.ndim == 2 and r.shape[0] == 1 and r.shape[1] > 1]
    return worst, agree


def evaluate(model, frames, refs, threshold, layers, threads=None, start: int = 0):
    """(worst relative L2 over frames and outputs, argmax agreement or None, mean mac_fraction);
    frames before `start` run but are not counted."""
    sess = InferenceSession(model, threshold=threshold, layer_thresholds=layers, threads=threads)
    worst, agree, n_cls, macs = 0.0, 0, 0, []
    name = sess.get_inputs()[0].name
    for i, (f, ref) in enumerate(zip(frames, refs)):
        outs = sess.run(None, {name: f})
        if i < start:
            continue
        macs.append(sess.stats["mac_fraction"])
        err, agreed = frame_error(outs, ref)
        worst = max(worst, err)
        agree, n_cls = agree + sum(agreed), n_cls + len(agreed)
    return worst, (agree / n_cls if n_cls else None), float(np.mean(macs[1:])) if len(macs) > 1 else 1.0


def tune(model, frames, max_error: float, threads=None, progress=None) -> TuneResult:
    clip = list(frames)
    fit = len(clip) - (len(clip) // 4 if len(clip) >= 8 else 0)
    frames = clip[:fit]
    dense = InferenceSession(model, policy="dense", threads=threads)
    name = dense.get_inputs()[0].name
    refs = [dense.run(None, {name: f}) for f in frames]
    # each layer's activation spread on the last tuning frame scales its thresholds
    spread = {}
    for step in dense.program:
        if hasattr(step, "thr") and step.node is not None and step.outputs and hasattr(step.outputs[0], "logical"):
            spread[step.node.name] = float(np.std(step.outputs[0].logical())) or 1.0
    frame_std = float(np.std(frames[0])) or 1.0
    clip_refs = refs + [dense.run(None, {name: f}) for f in clip[fit:]]
    _, _, exact_mac = evaluate(model, frames, refs, 0.0, {}, threads)

    def ok(thr, layers):
        err, _, _ = evaluate(model, frames, refs, thr, layers, threads)
        return err <= max_error

    names = list(spread)
    scale = next((c for c in UNIFORM if ok(c * frame_std, {n: c * spread[n] for n in names})), 0.0)
    threshold, layers = scale * frame_std, ({n: scale * spread[n] for n in names} if scale else {})
    for i, layer in enumerate(names):
        base = layers.get(layer) or UNIFORM[-1] * spread[layer]
        for g in GROWTH:
            trial = dict(layers, **{layer: g * base})
            if ok(threshold, trial):
                layers = trial
                break
        if progress:
            progress(i + 1, len(names))
    err, agree, mac = evaluate(model, frames, refs, threshold, layers, threads)
    held = evaluate(model, clip, clip_refs, threshold, layers, threads, start=fit)[0] if fit < len(clip) else None
    return TuneResult(threshold, layers, err, agree, mac, exact_mac, held)
