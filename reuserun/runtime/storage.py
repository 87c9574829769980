"""Where a session keeps each tensor between frames.

Spatial tensors ((1, C, H, W) or (1, C, L)) live channels-last in an (H, W, Ctot) float32
buffer, possibly as a channel slice of a bigger buffer, with a per-pixel uint8 mask of the
positions that changed this frame. Other tensors are plain arrays with one changed flag.
"""
from __future__ import annotations

import numpy as np

from reuserun.kernels import region
from reuserun.plan import marks
from reuserun.plan.marks import Marks
from reuserun.plan.rules import spatial_hw


def aligned_zeros(n: int, align: int = 64) -> np.ndarray:
    """n float32 zeros starting on an align-byte boundary: a kernel's 16-channel store is then
    one cache line, not two, wherever the channel count is a multiple of 16. The zeros are
    written here, so every page is mapped before the first frame: a shifted stream slides its
    caches into their slack, and first touches there cost page faults in its first hops."""
    raw = np.empty(n + align // 4, np.float32)
    raw.fill(0.0)
    skip = (-raw.ctypes.data % align) // 4
    return raw[skip:skip + n]


def slide_window(pair: list, slack: int, n: int, d: int):
    """Moves the n-float window of pair = [flat buffer, start] by d floats (new[i] = old[i + d],
    marks.slide); returns the window's new view when its start changed, else None."""
    start = marks.slide(pair[0], pair[1], slack, n, d)
    if start == pair[1]:
        return None
    pair[1] = start
    return pair[0][start:start + n]


class Spatial(Marks):
    kind = "spatial"

    def __init__(self, name: str, shape: tuple[int, ...], within: Spatial | None = None, off: int = 0,
                 slack: int = 0, flat: np.ndarray | None = None):
        """within: the tensor whose buffer this one is a channel slice of (off: first channel);
        slack: spare pixels after the buffer, so shift reuse can slide it (rebase); flat: a
        buffer to live in (one whose tensor is dead, runtime/compiler.py's buffer reuse)."""
        self.name, self.shape, self.rank = name, tuple(shape), len(shape)
        self.H, self.W = spatial_hw(shape)
        self.C = shape[1]
        if within is None:
            self.owner = self
            self.slack, self.origin = slack, 0
            self.flat = aligned_zeros((self.npix + slack) * self.C) if flat is None else flat
            self.buf = self.flat[:self.npix * self.C].reshape(self.H, self.W, self.C)
            self._views = {0: self.buf}  # buffer views by origin, for rebase
            self.members = [self]
        else:
            self.owner = within.owner
            self.buf = self.owner.buf
            self.owner.members.append(self)
        self.off = off
        self.mask = np.zeros(self.H * self.W, np.uint8)
        self.nchanged = 0
        self.box = None  # (y0, y1, x0, x1) holding every marked pixel, None when none is
        self.planes = None  # frame-stack inputs: per-channel change masks (C, H*W) and boxes
        self.plane_boxes = None

    def logical(self) -> np.ndarray:
        """A read-only NCHW (or NCL) view of the cached values."""
        v = self.buf[:, :, self.off:self.off + self.C].transpose(2, 0, 1)[None]
        v = v if self.rank == 4 else v[:, :, 0, :]
        v = v.view()
        v.flags.writeable = False
        return v

    def channels_first(self, out: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
        """The cached values as a C-contiguous NCHW (or NCL) array, written into out when given
        (a reused buffer of the logical shape): numpy ops on it run at full speed, where on the
        strided logical() view they crawl element by element."""
        if out is None:
            out = np.empty((1, self.C, self.H, self.W) if self.rank == 4 else (1, self.C, self.W), np.float32)
        region.to_channels_first(self.buf, self.off, self.C, None, out.reshape(self.C, -1), threads)
        return out

    def rows(self) -> np.ndarray:
        """The cached values as an (H*W, C) view: one row per position."""
        return self.buf.reshape(self.npix, -1)[:, self.off:self.off + self.C]

    def load(self, logical: np.ndarray, threads: int = 1) -> None:
        """Overwrite the whole tensor from an NCHW / NCL array."""
        chw = logical[0] if self.rank == 4 else logical[0][:, None, :]
        region.to_channels_last(np.ascontiguousarray(chw, np.float32), self.buf, self.off, threads)


class Plain:
    kind = "plain"

    def __init__(self, name: str, shape: tuple[int, ...], dtype=np.float32):
        self.name, self.shape = name, tuple(shape)
        self.arr = np.zeros(shape, dtype)
        self.changed = False

    def logical(self) -> np.ndarray:
        return self.arr

    def store(self, value: np.ndarray, track: bool, thr: float = 0.0) -> None:
        """Keep `value`; with track, the changed flag says whether any bit moved (thr == 0) or any
        element moved by more than thr, else the old value stays as the reference."""
        value = np.asarray(value, self.arr.dtype).reshape(self.shape)
        if not track:
            self.changed = True
        elif thr > 0:
            self.changed = bool(np.max(np.abs(value - self.arr), initial=0.0) > thr)
        else:
            # compare bits without copying either array to bytes
            self.changed = not region.same_bytes(np.ascontiguousarray(value).reshape(-1).view(np.uint8),
                                                 self.arr.reshape(-1).view(np.uint8))
        if self.changed:
            np.copyto(self.arr, value)

    def clear(self) -> None:
        self.changed = False


class Const:
    kind = "const"
    changed = False

    def __init__(self, name: str, value: np.ndarray):
        self.name, self.arr, self.shape = name, value, tuple(value.shape)

    def logical(self) -> np.ndarray:
        return self.arr

    def clear(self) -> None:
        pass
