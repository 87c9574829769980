"""Region policies: how the set of positions a change reaches becomes the set a kernel computes.

Every policy writes a uint8 compute mask that covers the reach mask; kernels then compute the
listed pixels. Coarser regions cost more MACs but less bookkeeping."""
from __future__ import annotations

import numpy as np

from reuserun.kernels import region

DEFAULT_TILE = 8


class Policy:
    name = ""


class Dense(Policy):
    name = "dense"

    def coarsen(self, reach, H, W, out):
        out[:] = 1


class Rect(Policy):
    """One bounding rectangle per tensor, as in the seed paper."""
    name = "rect"

    def coarsen(self, reach, H, W, out):
        out[:] = 0
        box = region.bbox(reach, H, W)
        if box is not None:
            region.fill_rect(out, W, *box)


def merge_overlapping(boxes):
    """Merge (y0, y1, x0, x1) boxes until none overlap; the result is disjoint."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    boxes[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


class Rects(Policy):
    """Several disjoint rectangles: bounding boxes of connected groups of changed tiles."""
    name = "rects"

    def __init__(self, tile=4):
        self.tile = tile

    def coarsen(self, reach, H, W, out):
        out[:] = 0
        for box in merge_overlapping(region.components(reach, H, W, self.tile)):
            region.fill_rect(out, W, *box)


class Tiles(Policy):
    """A grid of tile x tile blocks; tile=1 is exact pixel granularity."""
    name = "tiles"

    def __init__(self, tile=DEFAULT_TILE):
        self.tile = tile

    def coarsen(self, reach, H, W, out):
        if self.tile == 1:
            out[:] = reach
        else:
            region.tiles(reach, H, W, self.tile, out)


class Auto(Policy):
    """Pixel granularity (the kernels gather arbitrary pixel lists at no extra cost per pixel),
    computing a layer whole (still comparing results, so unchanged values stop the change)
    when the change reaches most of it."""
    name = "auto"
    dense_above = 0.8

    def coarsen(self, reach, H, W, out):
        if region.count(reach, H * W) > self.dense_above * H * W:
            out[:] = 1
        else:
            out[:] = reach


POLICIES = {"auto": Auto, "dense": Dense, "rect": Rect, "rects": Rects, "tiles": Tiles}


def make_policy(name: str, tile: int | None = None):
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}")
    cls = POLICIES[name]
    return cls(tile) if tile is not None and name in ("tiles", "rects") else cls()
