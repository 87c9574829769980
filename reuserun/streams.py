"""Turn a `--source` spec into model-ready frames.

  synthetic[:SCENARIO]  reuserun.sources (static texture with moving objects by default)
  video:PATH            decoded with PyAV (the [video] extra), scaled to the model's input
  atari:GAME            an ALE game through gymnasium (the [atari] extra), random actions

Every source yields float32 NCHW frames in [0, 1] of the requested shape.
"""
from __future__ import annotations

import numpy as np

from reuserun import sources


def frames_from_spec(spec: str, shape: tuple, count: int, seed: int = 0) -> list[np.ndarray]:
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise ValueError(f"unknown source {spec!r}; use synthetic[:SCENARIO], video:PATH or atari:GAME")
    return SOURCES[kind](arg, tuple(shape), count, seed)


def synthetic(arg: str, shape, count, seed):
    return list(sources.synthetic_stream(shape, arg or "default", frames=count, seed=seed))


def video(path: str, shape, count, seed):
    try:
        import av
    except ImportError as e:
        raise RuntimeError("video sources need PyAV: pip install 'reuserun[video]'") from e
    if not path:
        raise ValueError("video source needs a path: video:PATH")
    _, c, h, w = shape
    fmt = "gray" if c == 1 else "rgb24"
    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            img = frame.reformat(width=w, height=h, format=fmt).to_ndarray()
            img = img[None] if c == 1 else img.transpose(2, 0, 1)[:c]
            out.append(np.ascontiguousarray(img[None], np.float32) / np.float32(255.0))
            if len(out) >= count:
                break
    if not out:
        raise ValueError(f"no video frames decoded from {path}")
    return out


def atari(game: str, shape, count, seed):
    try:
        import ale_py
        import gymnasium as gym
    except ImportError as e:
        raise RuntimeError("atari sources need gymnasium and ale-py: pip install 'reuserun[atari]'") from e
    gym.register_envs(ale_py)
    _, c, h, w = shape
    env = gym.make(f"ALE/{game or 'Pong'}-v5", frameskip=4, repeat_action_probability=0.0)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        out.append(_atari_frame(obs, c, h, w))
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return out


def _atari_frame(obs: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """Red channel (the seed paper's choice) for one-channel models, RGB otherwise; nearest
    subsampling to (h, w)."""
    img = obs[..., :1] if c == 1 else obs[..., :c]
    ys = (np.arange(h) * img.shape[0] // h).astype(np.intp)
    xs = (np.arange(w) * img.shape[1] // w).astype(np.intp)
    img = img[ys][:, xs].transpose(2, 0, 1)
    return np.ascontiguousarray(img[None], np.float32) / np.float32(255.0)


SOURCES = {"synthetic": synthetic, "video": video, "atari": atari}
