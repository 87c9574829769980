"""Synthetic frame streams with known change structure (numpy only).

Frames are float32, NCHW, C-contiguous, values in [0, 1] (not mean/std normalized: the zoo
models are built for [0, 1] inputs). Each frame is a fresh array, so a consumer may keep the
previous one. Every batch item shows the same scene; any channel count works, so (1, 1, h, w)
gives grayscale frames for the Atari-size policy nets.

The background is a static texture (smooth multi-scale noise plus a few sharp-edged rectangles),
deterministic from the seed. Each frame is rebuilt from the same background array, so pixels
outside the changed regions are bit-identical between consecutive frames: exact reuse can skip
them. Scenarios (the names are a public contract):

    full     every pixel changes every frame (fresh small noise over the whole background)
    still    identical frames
    object   one square object (~1% of the area) moving a few pixels per frame, bouncing at edges
    objects  five objects (~0.5% of the area each), each bouncing inside its own cell, far apart
    scroll   a band of rows (~10% of the height) scrolling sideways, ticker-like
    noise    sparse flicker: each frame ~0.05% of the pixels take random values and last frame's
             flickered pixels return to the background, so ~0.1% of the pixels change a frame
    default  = objects

The first frame is the background with the objects at their starting positions.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SCENARIOS = ("full", "still", "object", "objects", "scroll", "noise")
DEFAULT_SCENARIO = "objects"


def changed_fraction(prev: np.ndarray, cur: np.ndarray) -> float:
    """Fraction of pixel positions (over N, H, W) where any channel differs, exactly (!=)."""
    if prev.shape != cur.shape or prev.ndim != 4:
        raise ValueError(f"expected two NCHW frames of one shape, got {prev.shape} and {cur.shape}")
    return float((prev != cur).any(axis=1).mean())


def synthetic_stream(shape: tuple[int, int, int, int] = (1, 3, 320, 320),
                     scenario: str = DEFAULT_SCENARIO, frames: int | None = 100,
                     seed: int = 0) -> Iterator[np.ndarray]:
    """Yields `frames` frames of `shape` (N, C, H, W); `frames=None` streams forever."""
    n, c, h, w = _check_shape(shape)
    scenario = DEFAULT_SCENARIO if scenario == "default" else scenario
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS} or 'default'")
    rng = np.random.default_rng(seed)
    background = _background(c, h, w, rng)
    step = _SCENES[scenario](background, rng)
    t = 0
    while frames is None or t < frames:
        img = step(t)[None]  # (1, C, H, W), a fresh writable array
        yield img if n == 1 else np.repeat(img, n, axis=0)
        t += 1


def frame_sequence(shape: tuple[int, int, int, int] = (1, 1, 105, 80),
                   scenario: str = DEFAULT_SCENARIO, frames: int = 100,
                   seed: int = 0) -> np.ndarray:
    """All frames of `synthetic_stream` stacked: (frames, N, C, H, W).

    The default shape is the Atari policy net's input (grayscale, subsampled by 2).
    """
    return np.stack(list(synthetic_stream(shape, scenario, frames, seed)))


def _check_shape(shape) -> tuple[int, int, int, int]:
    if len(shape) != 4 or any(int(d) <= 0 for d in shape):
        raise ValueError(f"shape must be positive (N, C, H, W), got {shape}")
    return tuple(int(d) for d in shape)


# --- background -------------------------------------------------------------------------------

def _smooth_noise(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Random values on a grid every `cell` pixels, bilinearly interpolated to (h, w)."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw))
    y, x = np.arange(h) / cell, np.arange(w) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g = grid[y0][:, x0], grid[y0][:, x0 + 1], grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g[0] * (1 - fx) + g[1] * fx) * (1 - fy) + (g[2] * (1 - fx) + g[3] * fx) * fy


def _background(c: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    side = max(h, w)
    cells = [cell for cell in (side // 4, side // 16, side // 64, 2) if cell >= 2] or [2]
    # A shared luminance plus a weaker per-channel tint, like a natural image.
    lum = sum(_smooth_noise(h, w, cell, rng) / (i + 1) for i, cell in enumerate(cells))
    img = np.stack([lum + 0.5 * _smooth_noise(h, w, cells[0], rng) for _ in range(c)])
    # Sharp edges: a few rectangles offset in brightness.
    for _ in range(6):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = y0 + rng.integers(1, h // 3 + 2), x0 + rng.integers(1, w // 3 + 2)
        img[:, y0:y1, x0:x1] += rng.uniform(-0.8, 0.8, (c, 1, 1))
    lo, hi = img.min(), img.max()
    # Kept inside [0.1, 0.9] so the `full` scenario's noise never needs clipping.
    return (0.1 + 0.8 * (img - lo) / max(hi - lo, 1e-6)).astype(np.float32)


# --- scenarios: each returns step(t) -> frame t as a fresh (C, H, W) array ----------------------

class _Mover:
    """A textured square that moves by an integer velocity and bounces inside a box."""

    def __init__(self, c: int, side: int, box: tuple[int, int, int, int],
                 rng: np.random.Generator):
        self.side, (self.y0, self.x0, self.y1, self.x1) = side, box  # box: allowed top-left range
        self.texture = _object_texture(c, side, rng)
        self.pos = [int(rng.integers(self.y0, self.y1 + 1)), int(rng.integers(self.x0, self.x1 + 1))]
        self.vel = [int(rng.integers(1, 4)) * int(rng.choice((-1, 1))) for _ in range(2)]

    def draw(self, img: np.ndarray) -> None:
        y, x, s = self.pos[0], self.pos[1], self.side
        img[:, y:y + s, x:x + s] = self.texture

    def move(self) -> None:
        for i, (lo, hi) in enumerate(((self.y0, self.y1), (self.x0, self.x1))):
            p = self.pos[i] + self.vel[i]
            if p < lo or p > hi:  # reflect off the wall
                self.vel[i] = -self.vel[i]
                p = min(max(self.pos[i] + self.vel[i], lo), hi)
            self.pos[i] = p


def _object_texture(c: int, side: int, rng: np.random.Generator) -> np.ndarray:
    # A bright colour with a fine pattern: unlike the background almost everywhere, so the whole
    # footprint (old and new position) changes when the object moves.
    yy, xx = np.mgrid[:side, :side]
    stripes = 0.25 * ((yy + 2 * xx) % 4 < 2)
    colour = rng.uniform(0.4, 0.7, (c, 1, 1))
    return (colour + stripes + rng.uniform(0.0, 0.05, (c, side, side))).astype(np.float32)


def _movers_scene(bg: np.ndarray, movers: list[_Mover]):
    def step(t: int) -> np.ndarray:
        if t > 0:
            for m in movers:
                m.move()
        img = bg.copy()
        for m in movers:
            m.draw(img)
        return img
    return step


def _object(bg, rng):
    c, h, w = bg.shape
    side = max(1, round(np.sqrt(0.01 * h * w)))
    box = (0, 0, max(h - side, 0), max(w - side, 0))
    return _movers_scene(bg, [_Mover(c, side, box, rng)])


def _objects(bg, rng):
    # Five of the six cells of a 2x3 grid; each object stays inside its cell, a fifth of the cell
    # away from its border, so two objects are always at least 2/5 of a cell apart.
    c, h, w = bg.shape
    side = max(1, round(np.sqrt(0.005 * h * w)))
    ch, cw = h // 2, w // 3
    mh, mw = ch // 5, cw // 5
    movers = []
    for cell in rng.permutation(6)[:5]:
        top, left = (cell // 3) * ch + mh, (cell % 3) * cw + mw
        bottom, right = top + ch - 2 * mh - side, left + cw - 2 * mw - side
        box = (top, left, max(bottom, top), max(right, left))
        movers.append(_Mover(c, side, box, rng))
    return _movers_scene(bg, movers)


def _full(bg, rng):
    def step(t: int) -> np.ndarray:
        # |noise| in [0.002, 0.03): no pixel can repeat by chance, and the background's
        # [0.1, 0.9] range keeps the result in [0, 1] without clipping.
        v = 2.0 * rng.random(bg.shape, dtype=np.float32) - 1.0
        return bg + np.where(v >= 0, 1.0, -1.0).astype(np.float32) * (0.002 + 0.028 * np.abs(v))
    return step


def _still(bg, rng):
    return lambda t: bg.copy()


def _scroll(bg, rng):
    c, h, w = bg.shape
    band = max(1, round(0.1 * h))
    top = min(int(0.6 * h), h - band)
    # A strip wider than the frame with fine random "glyphs"; it slides left 3 px a frame.
    period = 4 * w + 7
    strip = rng.uniform(0.0, 1.0, (c, band, period)).astype(np.float32)

    def step(t: int) -> np.ndarray:
        img = bg.copy()
        cols = (np.arange(w) + 3 * t) % period
        img[:, top:top + band] = strip[:, :, cols]
        return img
    return step


def _noise(bg, rng):
    c, h, w = bg.shape
    k = max(1, round(0.0005 * h * w))

    def step(t: int) -> np.ndarray:
        img = bg.copy()  # last frame's flicker is gone: those pixels are background again
        ys, xs = rng.integers(0, h, k), rng.integers(0, w, k)
        img[:, ys, xs] = rng.uniform(0.0, 1.0, (c, k)).astype(np.float32)
        return img
    return step


_SCENES = {"full": _full, "still": _still, "object": _object, "objects": _objects,
           "scroll": _scroll, "noise": _noise}
