"""Per-axis index maps shared by the planner (what a change reaches) and the compiler (where
kernels read). Keeping them in one place keeps the two in agreement."""
from __future__ import annotations

import math

import numpy as np


def window_ranges(out_len: int, k: int, s: int, p: int, d: int):
    """Input index range [lo, hi] read by each output index of a sliding window."""
    o = np.arange(out_len, dtype=np.int64)
    lo = o * s - p
    return lo.astype(np.int32), (lo + (k - 1) * d).astype(np.int32)


def transposed_ranges(out_len: int, k: int, s: int, p: int, d: int):
    """Input index range feeding each output index of a transposed conv (o = i*s - p + t*d)."""
    o = np.arange(out_len, dtype=np.int64)
    lo = -((-(o + p - (k - 1) * d)) // s)  # ceil division
    hi = (o + p) // s
    return lo.astype(np.int32), hi.astype(np.int32)


def _source_coord(x, out_len, in_len, scale, coord_mode):
    if coord_mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if coord_mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if coord_mode == "align_corners":
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    if coord_mode == "asymmetric":
        return x / scale
    if coord_mode == "tf_half_pixel_for_nearest":
        return (x + 0.5) / scale
    raise ValueError(f"unsupported coordinate_transformation_mode {coord_mode!r}")


def resize_sources(out_len: int, in_len: int, scale: float, mode: str, coord_mode: str,
                   nearest_mode: str = "round_prefer_floor"):
    """For each output index: (i0, i1, w0, w1), the source indices and weights along one axis.
    Nearest gives i1 == i0, w1 == 0."""
    x = _source_coord(np.arange(out_len, dtype=np.float64), out_len, in_len, scale, coord_mode)
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            i = np.ceil(x - 0.5)
        elif nearest_mode == "round_prefer_ceil":
            i = np.floor(x + 0.5)
        elif nearest_mode == "floor":
            i = np.floor(x)
        elif nearest_mode == "ceil":
            i = np.ceil(x)
        else:
            raise ValueError(f"unsupported nearest_mode {nearest_mode!r}")
        i = np.clip(i, 0, in_len - 1).astype(np.int32)
        return i, i.copy(), np.ones(out_len, np.float32), np.zeros(out_len, np.float32)
    x = np.clip(x, 0, in_len - 1)
    i0 = np.floor(x).astype(np.int32)
    i1 = np.minimum(i0 + 1, in_len - 1).astype(np.int32)
    w1 = (x - i0).astype(np.float32)
    return i0, i1, (1.0 - w1).astype(np.float32), w1


def slice_map(out_len: int, start: int, step: int):
    """Source index of each output index of a strided slice."""
    return (start + step * np.arange(out_len, dtype=np.int64)).astype(np.int32)


def pad_map(out_len: int, in_len: int, before: int, mode: str):
    """Source index of each output index of a pad (-1: the constant)."""
    i = np.arange(out_len, dtype=np.int64) - before
    if mode == "constant":
        return np.where((i >= 0) & (i < in_len), i, -1).astype(np.int32)
    if mode == "edge":
        return np.clip(i, 0, in_len - 1).astype(np.int32)
    if mode == "reflect":
        if in_len == 1:
            return np.zeros(out_len, np.int32)
        period = 2 * (in_len - 1)
        r = np.mod(i, period)
        return np.where(r < in_len, r, period - r).astype(np.int32)
    raise ValueError(f"unsupported pad mode {mode!r}")


def conv_out_len(in_len, k, s, p_total, d, ceil_mode=False):
    span = in_len + p_total - d * (k - 1) - 1
    return (math.ceil(span / s) if ceil_mode else span // s) + 1
