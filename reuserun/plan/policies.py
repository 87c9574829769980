"""Region policies: how the set of positions a change reaches becomes the set a kernel computes.

`coarsen(reach, H, W, out, box)` gets the reach mask, valid inside `box` (y0, y1, x0, x1), and
writes the compute mask into `out` over every pixel of the box it returns (pixels outside that box
are not computed). Coarser regions cost more MACs but less bookkeeping.
"""
from __future__ import annotations

from reuserun.kernels import region

DEFAULT_TILE = 8
RECTS_TILE = 4  # rects: the tile whose connected changed groups become rectangles
DENSE_ABOVE = 0.8  # auto: beyond this share of a layer's positions, the whole layer is computed


def _full(H, W, out):
    out[:] = 1
    return (0, H, 0, W)


class Policy:
    name = ""


class Dense(Policy):
    name = "dense"

    def coarsen(self, reach, H, W, out, box):
        return _full(H, W, out)


class Rect(Policy):
    """One bounding rectangle per tensor, as in the seed paper."""
    name = "rect"

    def coarsen(self, reach, H, W, out, box):
        _, tight = region.scan(reach, W, *box)
        if tight is not None:
            region.fill(out, W, *tight, 1)
        return tight


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

    def __init__(self, tile=RECTS_TILE):
        self.tile = tile

    def coarsen(self, reach, H, W, out, box):
        rects = merge_overlapping(region.components(reach, H, W, self.tile, *box))
        if not rects:
            return None
        outer = (min(r[0] for r in rects), max(r[1] for r in rects),
                 min(r[2] for r in rects), max(r[3] for r in rects))
        region.fill(out, W, *outer, 0)
        for r in rects:
            region.fill(out, W, *r, 1)
        return outer


class Tiles(Policy):
    """A grid of tile x tile blocks; tile=1 is exact pixel granularity."""
    name = "tiles"

    def __init__(self, tile=DEFAULT_TILE):
        self.tile = tile

    def coarsen(self, reach, H, W, out, box):
        if self.tile == 1:
            region.copy_box(reach, out, W, *box)
            return box
        return region.tiles(reach, H, W, self.tile, out, *box)


class Auto(Policy):
    """Pixel granularity (the kernels gather arbitrary pixel lists at no extra cost per pixel),
    computing a layer whole (still comparing results, so unchanged values stop the change)
    when the change reaches most of it."""
    name = "auto"
    dense_above = DENSE_ABOVE

    def coarsen(self, reach, H, W, out, box):
        y0, y1, x0, x1 = box
        if (y1 - y0) * (x1 - x0) > self.dense_above * H * W \
                and region.scan(reach, W, *box)[0] > self.dense_above * H * W:
            return _full(H, W, out)
        region.copy_box(reach, out, W, *box)
        return box


POLICIES = {"auto": Auto, "dense": Dense, "rect": Rect, "rects": Rects, "tiles": Tiles}


def make_policy(name: str, tile: int | None = None):
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}")
    cls = POLICIES[name]
    return cls(tile) if tile is not None and name in ("tiles", "rects") else cls()
