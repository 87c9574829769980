"""Exact shift reuse: what a translated frame lets every cached tensor keep.

When a frame is the reference moved by (dy, dx) (scrolling, panning, a sliding window over a
stream), a tensor whose positions map to the input with stride s can move its cache by (dy, dx)/s
instead of recomputing it, provided that is a whole number of positions. Only three kinds of
output position then need computing:
  - the ones whose inputs changed beyond the shift (the planner's usual reach),
  - the exposed band: positions whose old counterpart lies outside the tensor,
  - the border band: positions whose window touches the input's edge, where padding (or the
    clamping of a resize) stands in for data and so does not move with the content.
An op whose cache cannot move (stride does not divide the shift, global ops, mixed shifts) is
recomputed whole. One rule per op in SHIFT_RULES; the runtime moves the caches (region.move).
"""
from __future__ import annotations

import numpy as np

from reuserun import ir
from reuserun.plan.rules import Reach

Shift = tuple  # (dy, dx) in the tensor's own positions; None: the cache cannot move


def detect(frame: np.ndarray, ref: np.ndarray, max_shift: int | None = None) -> list[tuple[int, int]]:
    """Candidate translations (dy, dx) such that frame[:, y, x] looks like ref[:, y + dy, x + dx]:
    pure vertical ones from matching row hashes, pure horizontal ones from column hashes, and any
    other from phase correlation. Candidates only; the caller verifies them exactly
    (region.diff_shifted)."""
    C, H, W = frame.shape
    rng = np.random.default_rng(12345)
    out = []
    if H > 1:
        w = rng.standard_normal((C, W))
        out += [(d, 0) for d in _votes(np.einsum("chw,cw->h", frame, w), np.einsum("chw,cw->h", ref, w), max_shift)]
    w = rng.standard_normal((C, H))
    out += [(0, d) for d in _votes(np.einsum("chw,ch->w", frame, w), np.einsum("chw,ch->w", ref, w), max_shift)]
    if H > 1 and W > 1:
        d = _phase_correlation(frame.sum(axis=0), ref.sum(axis=0))
        if d is not None and d not in out:
            out.append(d)
    return out


def _phase_correlation(new: np.ndarray, old: np.ndarray):
    """The (dy, dx) with new[y, x] ~ old[y + dy, x + dx] from the peak of the normalised cross
    power spectrum (a diagonal pan, which row and column hashes cannot see), or None."""
    a = np.fft.rfft2(new - new.mean())
    b = np.fft.rfft2(old - old.mean())
    g = a * np.conj(b)
    g /= np.maximum(np.abs(g), 1e-12)
    r = np.fft.irfft2(g, s=new.shape)
    py, px = np.unravel_index(int(np.argmax(r)), r.shape)
    if r[py, px] < 0.1:  # no dominant translation
        return None
    H, W = new.shape
    sy = py - H if py > H // 2 else py
    sx = px - W if px > W // 2 else px
    d = (-int(sy), -int(sx))
    return None if d == (0, 0) else d


def _votes(new: np.ndarray, old: np.ndarray, max_shift: int | None, keep: int = 2) -> list[int]:
    """Offsets d with new[i] == old[i + d] for many i, from hashes that occur at most 4 times in
    `old` (blank rows or silence match everywhere and say nothing)."""
    vals, first, counts = np.unique(old, return_index=True, return_counts=True)
    pos = np.searchsorted(vals, new)
    pos = np.minimum(pos, len(vals) - 1)
    hit = (vals[pos] == new) & (counts[pos] <= 4)
    if not hit.any():
        return []
    # for a value seen up to 4 times, vote for its first occurrence only: still a majority signal
    d = first[pos[hit]] - np.flatnonzero(hit)
    n = len(new)
    tally = np.bincount(d + n, minlength=2 * n + 1)
    tally[n] = 0  # no shift is not a shift
    if max_shift is not None:
        tally[:max(0, n - max_shift)] = 0
        tally[n + max_shift + 1:] = 0
    best = np.argsort(tally)[::-1][:keep]
    return [int(b - n) for b in best if tally[b] >= max(2, hit.sum() // 8)]


# --- per-op rules -----------------------------------------------------------------------------

class _AxisShift:
    """How one axis of a window rule maps input shifts to output shifts, with its border bands.

    The window of output p reads input lo[p]..hi[p]; beyond the input's edge it reads padding
    (clamped=False) or the edge value (clamped=True: a resize's clipped coordinates). When the
    content moves by d > 0 (new[q] = old[q + d]), a window reaching past the low edge read data
    before and padding now, so it is recomputed; past the high edge both read padding. d < 0
    mirrors this.

    period: the output shift must be a multiple of it. Equal windows are not enough where the
    weights vary with the output's phase (a linear resize's interpolation weights, a transposed
    conv's taps): there the phase must match too.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, in_len: int, clamped: bool = False, period: int = 1):
        self.lo, self.hi, self.in_len, self.n = lo.astype(np.int64), hi.astype(np.int64), in_len, len(lo)
        self.period = period
        edge = 1 if clamped else 0
        ok_low = (self.lo >= edge) & (self.lo <= self.hi)
        ok_high = (self.hi <= in_len - 1 - edge) & (self.lo <= self.hi)
        bad_low = np.flatnonzero(~ok_low[:self.n // 2 + 1])
        bad_high = np.flatnonzero(~ok_high[self.n // 2:])
        self.a = int(bad_low[-1]) + 1 if bad_low.size else 0           # low band [0, a)
        self.b = self.n // 2 + int(bad_high[0]) if bad_high.size else self.n  # high band [b, n)
        self.monotone = bool(np.all(np.diff(self.lo) >= 0) and np.all(np.diff(self.hi) >= 0))
        self._cache: dict[int, int | None] = {0: 0}

    def out_shift(self, d: int) -> int | None:
        """The output shift matching an input shift d, or None when no whole shift does."""
        if d not in self._cache:
            self._cache[d] = self._find(d)
        return self._cache[d]

    def _find(self, d: int) -> int | None:
        if not self.monotone or self.b - self.a < 2:
            return None
        lo, last = self.lo, self.n - 1
        v = lo[(self.a + self.b) // 2]
        src, dst = np.flatnonzero(lo == v), np.flatnonzero(lo == v + d)
        if dst.size == 0 or src[0] == 0 or src[-1] == last or (dst[0] == 0 and dst[-1] == last):
            return None
        # a run at the tensor's edge may be cut or stretched there (clipping, clamping): align
        # the runs by their other end
        e = int(dst[-1] - src[-1]) if dst[0] == 0 else int(dst[0] - src[0])
        if e % self.period:
            return None
        # every inner position and its counterpart must read the same window, moved by d
        p = np.arange(max(self.a, self.a - e), min(self.b, self.b - e))
        if p.size == 0 or np.any(lo[p + e] != lo[p] + d) or np.any(self.hi[p + e] != self.hi[p] + d):
            return None
        return e

    def bands(self, e: int, d: int) -> list[tuple[int, int]]:
        """Output spans to recompute on this axis: the border band on the side the content moves
        away from, and the exposed band where the output has no old counterpart."""
        spans = []
        if d > 0:
            spans.append((0, self.a))
        elif d < 0:
            spans.append((self.b, self.n))
        if e > 0:
            spans.append((self.n - e, self.n))
        elif e < 0:
            spans.append((0, -e))
        return [(s0, s1) for s0, s1 in spans if s0 < s1]


class WindowShift:
    def __init__(self, reach: Reach, in_hw: tuple[int, int], clamped: bool = False, period=(1, 1)):
        self.axes = (_AxisShift(reach.ylo, reach.yhi, in_hw[0], clamped, period[0]),
                     _AxisShift(reach.xlo, reach.xhi, in_hw[1], clamped, period[1]))

    def __call__(self, d: Shift):
        """(output shift or None, output boxes to recompute whatever the inputs' masks say)."""
        ey = self.axes[0].out_shift(d[0])
        ex = self.axes[1].out_shift(d[1]) if ey is not None else None
        if ex is None:
            return None, []
        OH, OW = self.axes[0].n, self.axes[1].n
        boxes = [(y0, y1, 0, OW) for y0, y1 in self.axes[0].bands(ey, d[0])]
        boxes += [(0, OH, x0, x1) for x0, x1 in self.axes[1].bands(ex, d[1])]
        return (ey, ex), boxes


def exposed(d: Shift, H: int, W: int) -> list[tuple[int, int, int, int]]:
    """Boxes of a tensor moved by d whose old counterpart lies outside it: their cached values
    are stale, so they count as changed whatever was computed there."""
    dy, dx = d
    boxes = []
    if dy:
        boxes.append((H - dy, H, 0, W) if dy > 0 else (0, -dy, 0, W))
    if dx:
        boxes.append((0, H, W - dx, W) if dx > 0 else (0, H, 0, -dx))
    return [(max(0, y0), min(H, y1), max(0, x0), min(W, x1)) for y0, y1, x0, x1 in boxes]


def _window(node, reach, in_hw):
    return WindowShift(reach, in_hw) if reach.kind == "window" else None


def _conv_transpose(node, reach, in_hw):
    """The taps an output position gathers depend on its phase modulo the stride."""
    if reach.kind != "window":
        return None
    strides = list(node.attrs["strides"])
    return WindowShift(reach, in_hw, period=tuple(([1] + strides)[-2:]))


def _resize(node, reach, in_hw):
    """Resize moves with its input only for whole scale factors (the source coordinate is then
    periodic in the output index); align_corners maps corners, not a grid."""
    a = node.attrs
    scales = a["scales"][2:]
    if a["coord_mode"] == "align_corners" or any(s != int(s) for s in scales) or reach.kind != "window":
        return None
    return WindowShift(reach, in_hw, clamped=True, period=tuple(int(s) for s in ([1.0] + list(scales))[-2:]))


def _pointwise(node, reach, in_hw):
    return "same"


def _channels(node, reach, in_hw):
    return "same" if node.attrs.get("axis") == 1 else None


def _fixed(node, reach, in_hw):
    return None


SHIFT_RULES = {
    "conv": _window,
    "conv_transpose": _conv_transpose,
    "maxpool": _window,
    "avgpool": _window,
    "resize": _resize,
    "slice": _window,
    "pad": _window,
    "act": _pointwise,
    "binary": _pointwise,
    "identity": _pointwise,
    "channel_shuffle": _pointwise,
    "channel_norm": _pointwise,
    "concat": _channels,
    "split": _channels,
    "global_avgpool": _fixed,
    "global_maxpool": _fixed,
    "flatten": _fixed,
    "reshape": _fixed,
    "transpose": _fixed,
    "gemm": _fixed,
    "matmul": _fixed,
    "softmax": _channels,
    "onnx_op": _fixed,
}


def shift_rule(node, reach, in_hw):
    """'same' (the output moves with its inputs), a WindowShift, or None (cannot move)."""
    return SHIFT_RULES[node.op](node, reach, in_hw)
assert set(SHIFT_RULES) == set(ir.OPS), set(ir.OPS) ^ set(SHIFT_RULES)
