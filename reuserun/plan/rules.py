"""One propagation rule per op: which output positions a change at input positions can reach.

A rule returns a Reach:
  same    output position (y, x) depends on input position (y, x) of each spatial input;
  window  output (y, x) depends on input rows ylo[y]..yhi[y] and columns xlo[x]..xhi[x] of
          input 0 (inclusive, possibly out of range: the planner clips);
  all     every output position depends on every input position.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np

from reuserun import ir
from reuserun.plan import geometry as geo


@dataclass
class Reach:
    kind: str
    ylo: np.ndarray | None = None
    yhi: np.ndarray | None = None
    xlo: np.ndarray | None = None
    xhi: np.ndarray | None = None

    def __post_init__(self):
        if self.kind == "window":
            self._axes = [_Axis(self.ylo, self.yhi), _Axis(self.xlo, self.xhi)]

    def out_box(self, box):
        """The box of output positions whose window meets the input box (y0, y1, x0, x1), or
        None."""
        ys = self._axes[0].span(box[0], box[1])
        xs = self._axes[1].span(box[2], box[3]) if ys is not None else None
        return None if xs is None else (ys[0], ys[1], xs[0], xs[1])


class _Axis:
    """One axis of a window rule, answering span queries by bisection when both bounds are
    monotone (conv, pool, resize, slice) and by a scan otherwise (reflect padding)."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi
        self.lo_list, self.hi_list = lo.tolist(), hi.tolist()
        self.monotone = bool(np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0))

    def span(self, a: int, b: int):
        """Output indices whose input range [lo, hi] meets [a, b): a half-open span, or None."""
        if self.monotone:
            i0 = bisect_left(self.hi_list, a)
            i1 = bisect_right(self.lo_list, b - 1)
            while i0 < i1 and self.lo_list[i0] > self.hi_list[i0]:  # empty ranges (padding)
                i0 += 1
            while i1 > i0 and self.lo_list[i1 - 1] > self.hi_list[i1 - 1]:
                i1 -= 1
            return (i0, i1) if i0 < i1 else None
        hit = np.flatnonzero((self.hi >= a) & (self.lo <= b - 1))
        return (int(hit[0]), int(hit[-1]) + 1) if hit.size else None


SAME = Reach("same")
ALL = Reach("all")


def spatial_hw(shape) -> tuple[int, int]:
    """(H, W) of an (N, C, H, W) or (N, C, L) shape; 1-D signals are one row."""
    return (shape[2], shape[3]) if len(shape) == 4 else (1, shape[2])


def _axes(node, graph):
    x = graph.tensors[node.inputs[0]].shape
    y = graph.tensors[node.outputs[0]].shape
    return spatial_hw(x), spatial_hw(y)


def _window(ranges_y, ranges_x):
    return Reach("window", ranges_y[0], ranges_y[1], ranges_x[0], ranges_x[1])


def conv(node, graph):
    a = node.attrs
    kh, kw = a["weight"].shape[2:] if "weight" in a else a["kernel"]
    _, (oh, ow) = _axes(node, graph)
    return _window(geo.window_ranges(oh, kh, a["strides"][0], a["pads"][0], a["dilations"][0]),
                   geo.window_ranges(ow, kw, a["strides"][1], a["pads"][1], a["dilations"][1]))


def pool(node, graph):
    a = node.attrs
    kh, kw = a["kernel"]
    dil = a.get("dilations", (1, 1))
    _, (oh, ow) = _axes(node, graph)
    return _window(geo.window_ranges(oh, kh, a["strides"][0], a["pads"][0], dil[0]),
                   geo.window_ranges(ow, kw, a["strides"][1], a["pads"][1], dil[1]))


def conv_transpose(node, graph):
    a = node.attrs
    kh, kw = a["weight"].shape[2:]
    _, (oh, ow) = _axes(node, graph)
    return _window(geo.transposed_ranges(oh, kh, a["strides"][0], a["pads"][0], a["dilations"][0]),
                   geo.transposed_ranges(ow, kw, a["strides"][1], a["pads"][1], a["dilations"][1]))


def resize(node, graph):
    a = node.attrs
    x = graph.tensors[node.inputs[0]].shape
    (h, w), (oh, ow) = _axes(node, graph)
    sy, sx = (a["scales"][2], a["scales"][3]) if len(x) == 4 else (1.0, a["scales"][2])
    ys = geo.resize_sources(oh, h, sy, a["mode"], a["coord_mode"], a.get("nearest_mode", "round_prefer_floor"))
    xs = geo.resize_sources(ow, w, sx, a["mode"], a["coord_mode"], a.get("nearest_mode", "round_prefer_floor"))
    return _window((ys[0], ys[1]), (xs[0], xs[1]))


def _spatial_axes(rank):
    return (2, 3) if rank == 4 else (2,)


def slice_(node, graph):
    x = graph.tensors[node.inputs[0]].shape
    y = graph.tensors[node.outputs[0]].shape
    a = node.attrs
    maps = []
    for ax in _spatial_axes(len(x)):
        start, step = a["starts"][ax], a["steps"][ax]
        start = 0 if start is None and step > 0 else (x[ax] - 1 if start is None else start)
        m = geo.slice_map(y[ax], start, step)
        maps.append((m, m))
    if len(x) == 3:
        maps.insert(0, (np.zeros(1, np.int32), np.zeros(1, np.int32)))
    return _window(*maps)


def pad(node, graph):
    x = graph.tensors[node.inputs[0]].shape
    y = graph.tensors[node.outputs[0]].shape
    a = node.attrs
    if any(a["pads"][ax] != (0, 0) for ax in (0, 1)):
        return ALL
    maps = []
    for ax in _spatial_axes(len(x)):
        m = geo.pad_map(y[ax], x[ax], a["pads"][ax][0], a["mode"])
        # the constant region has no source: an empty range
        maps.append((np.where(m < 0, 1, m).astype(np.int32), np.where(m < 0, 0, m).astype(np.int32)))
    if len(x) == 3:
        maps.insert(0, (np.zeros(1, np.int32), np.zeros(1, np.int32)))
    return _window(*maps)


def same(node, graph):
    return SAME


def along_channels(node, graph):
    """Concat, split and softmax along channels keep positions; along a spatial axis they mix
    them."""
    return SAME if node.attrs["axis"] == 1 else ALL


def everything(node, graph):
    return ALL


RULES = {
    "conv": conv,
    "conv_transpose": conv_transpose,
    "maxpool": pool,
    "avgpool": pool,
    "resize": resize,
    "slice": slice_,
    "pad": pad,
    "act": same,
    "binary": same,
    "identity": same,
    "channel_shuffle": same,
    "channel_norm": same,
    "concat": along_channels,
    "split": along_channels,
    "global_avgpool": everything,
    "global_maxpool": everything,
    "flatten": everything,
    "reshape": everything,
    "transpose": everything,
    "gemm": everything,
    "matmul": everything,
    "softmax": along_channels,
    "onnx_op": everything,
}
assert set(RULES) == set(ir.OPS), set(ir.OPS) ^ set(RULES)


def rule_for(node, graph) -> Reach:
    return RULES[node.op](node, graph)
