"""Write a small synthetic but camera-like clip (mp4, H.264 through PyAV): a static textured
background, per-frame Gaussian sensor noise, a slight global brightness flicker, moving objects.
Compression adds its own small changes everywhere, as real camera footage has.

    python tools/camera_clip.py clip.mp4 --frames 120 --size 160
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def camera_frames(frames: int, height: int, width: int, noise: float = 2.0, flicker: float = 0.01,
                  objects: int = 2, seed: int = 0):
    """uint8 RGB frames (height, width, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 110 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    bg = np.stack([base, base * 0.9 + 20, base * 0.8 + 30], axis=-1)
    bg += rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
    side = max(6, min(height, width) // 8)
    pos = rng.uniform(0, [height - side, width - side], (objects, 2))
    vel = rng.uniform(-3, 3, (objects, 2))
    colors = rng.uniform(20, 235, (objects, 3))
    for _ in range(frames):
        img = bg * (1.0 + flicker * rng.standard_normal())
        for k in range(objects):
            y, x = pos[k].astype(int)
            img[y:y + side, x:x + side] = colors[k]
            pos[k] += vel[k]
            for a, lim in ((0, height - side), (1, width - side)):
                if not 0 <= pos[k, a] <= lim:
                    vel[k, a] = -vel[k, a]
                    pos[k, a] = np.clip(pos[k, a], 0, lim)
        img += rng.normal(0, noise, img.shape)
        yield np.clip(img, 0, 255).astype(np.uint8)


def write_clip(path: str, frames: int = 60, height: int = 128, width: int = 128, fps: int = 25, **kw) -> str:
    import av
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23"}
        for img in camera_frames(frames, height, width, **kw):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--noise", type=float, default=2.0)
    args = p.parse_args(argv)
    print(write_clip(args.path, args.frames, args.size, args.size, noise=args.noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
