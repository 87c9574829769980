"""Turn a `--source` spec into model-ready frames.

  synthetic[:SCENARIO]  reuserun.sources (static texture with moving objects by default)
  video:PATH            decoded with PyAV (the [video] extra), scaled to the model's input
  atari:GAME            an ALE game through gymnasium (the [atari] extra), random actions
  audio:PATH[@HOP]      sliding windows over an audio file decoded and resampled to 16 kHz mono
                        with PyAV (the [video] extra); HOP samples apart (default 160: 10 ms)
  synthetic-audio[:HOP] the same over a generated speech-like signal

Image sources yield float32 NCHW frames in [0, 1]; audio sources (1, 1, L) windows in [-1, 1].
"""
from __future__ import annotations

import os

import numpy as np

from reuserun import sources


def frames_from_spec(spec: str, shape: tuple, count: int, seed: int = 0, mean=None, std=None) -> list[np.ndarray]:
    """Frames in [0, 1], then (x - mean) / std per channel when given, to match a model's
    preprocessing (e.g. mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))."""
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise ValueError(f"unknown source {spec!r}; use synthetic[:SCENARIO], video:PATH, atari:GAME, "
                         f"audio:PATH[@HOP] or synthetic-audio[:HOP]")
    frames = SOURCES[kind](arg, tuple(shape), count, seed)
    if mean is None and std is None:
        return frames
    c = shape[1]
    m = np.broadcast_to(np.asarray(0.0 if mean is None else mean, np.float32), (c,)).reshape(1, c, 1, 1)
    s = np.broadcast_to(np.asarray(1.0 if std is None else std, np.float32), (c,)).reshape(1, c, 1, 1)
    return [np.ascontiguousarray((f - m) / s, np.float32) for f in frames]


def synthetic(arg: str, shape, count, seed):
    return list(sources.synthetic_stream(shape, arg or "default", frames=count, seed=seed))


def _open_media(av, path: str, kind: str):
    """The container at path, or a one-line ValueError (missing, or not media PyAV reads)."""
    if not os.path.isfile(path):
        raise ValueError(f"{kind} file not found: {path}")
    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read {kind} {path}: {e}") from e


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
    with _open_media(av, path, "video") as container:
        for frame in container.decode(video=0):
            img = frame.reformat(width=w, height=h, format=fmt).to_ndarray()
            img = img[None] if c == 1 else img.transpose(2, 0, 1)[:c]
            out.append(np.ascontiguousarray(img[None], np.float32) / np.float32(255.0))
            if len(out) >= count:
                break
    if not out:
        raise ValueError(f"no video frames decoded from {path}")
    return out


ATARI_ENV = dict(frameskip=4, repeat_action_probability=0.25, full_action_space=False)
"""ALE v5 settings used everywhere: fixed frameskip 4, sticky actions 0.25 (seeded, so runs
repeat exactly), the game's minimal action set."""


def make_atari_env(game: str):
    try:
        import ale_py
        import gymnasium as gym
    except ImportError as e:
        raise RuntimeError("atari sources need gymnasium and ale-py: pip install 'reuserun[atari]'") from e
    gym.register_envs(ale_py)
    try:
        return gym.make(f"ALE/{game}-v5", **ATARI_ENV)
    except gym.error.Error as e:  # an unknown game, a missing ROM
        raise ValueError(f"cannot make Atari game {game!r}: {e}") from e


def atari_preprocess(obs: np.ndarray, c: int, h: int, w: int, mode: str = "red") -> np.ndarray:
    """An ALE RGB frame (210, 160, 3) as a model input (1, c, h, w) in [0, 1]. mode "red": the
    seed paper's red channel, "gray": luminance, "rgb": all three. Subsampled by striding when
    (h, w) is the frame divided by an integer (105x80, 53x40), else by nearest neighbour."""
    if mode == "red":
        img = obs[..., :1]
    elif mode == "gray":
        img = (obs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    else:
        img = obs[..., :c]
    ys, xs = _subsample(img.shape[0], h), _subsample(img.shape[1], w)
    img = img[ys][:, xs].transpose(2, 0, 1)
    if img.shape[0] != c:
        img = np.repeat(img[:1], c, axis=0)
    return np.ascontiguousarray(img[None], np.float32) / np.float32(255.0)


def _subsample(n: int, m: int) -> np.ndarray:
    """m indices out of n: every k-th (k = ceil(n / m)) when that gives m, else nearest."""
    k = -(-n // m)
    return (np.arange(m) * k if k * (m - 1) < n else np.arange(m) * n // m).astype(np.intp)


def atari(game: str, shape, count, seed):
    _, c, h, w = shape
    env = make_atari_env(game or "Pong")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        out.append(atari_preprocess(obs, c, h, w, "red" if c == 1 else "rgb"))
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return out


AUDIO_RATE = 16000
AUDIO_HOP = 160  # 10 ms at 16 kHz


def sliding_windows(signal: np.ndarray, length: int, hop: int, count: int) -> list[np.ndarray]:
    """`count` windows of `length` samples, each `hop` after the last, as (1, 1, length) frames
    (the signal is repeated if it is too short)."""
    need = length + hop * (count - 1)
    if signal.size < need:
        signal = np.tile(signal, -(-need // max(1, signal.size)))
    return [np.ascontiguousarray(signal[k * hop:k * hop + length], np.float32).reshape(1, 1, length)
            for k in range(count)]


def _audio_shape(shape) -> int:
    if len(shape) != 3 or shape[1] != 1:
        raise ValueError(f"audio sources feed 1-D models with a (1, 1, L) input, not {shape}")
    return shape[2]


def audio(arg: str, shape, count, seed):
    try:
        import av
    except ImportError as e:
        raise RuntimeError("audio sources need PyAV: pip install 'reuserun[video]'") from e
    path, _, hop = arg.rpartition("@") if "@" in arg else (arg, "", "")
    if not path:
        raise ValueError("audio source needs a path: audio:PATH[@HOP]")
    length = _audio_shape(shape)
    need = length + int(hop or AUDIO_HOP) * (count - 1)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks, total = [], 0
    with _open_media(av, path, "audio") as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                a = out.to_ndarray().reshape(-1)
                chunks.append(a)
                total += a.size
            if total >= need:
                break
    if not chunks:
        raise ValueError(f"no audio decoded from {path}")
    return sliding_windows(np.concatenate(chunks), length, int(hop or AUDIO_HOP), count)


def speech_like(samples: int, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts: harmonic tones with a moving pitch under an envelope, separated by
    low background noise, in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / AUDIO_RATE
    out = rng.normal(0.0, 0.01, samples)
    pos = 0
    while pos < samples:
        n = int(rng.integers(1600, 4800))  # 0.1 to 0.3 s
        seg = slice(pos, min(samples, pos + n))
        tt = t[seg] - t[pos]
        f0 = rng.uniform(100, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * tt))
        phase = 2 * np.pi * np.cumsum(f0) / AUDIO_RATE
        env = np.sin(np.pi * np.linspace(0, 1, tt.size)) ** 2
        out[seg] += env * sum(rng.uniform(0.1, 0.4) / h * np.sin(h * phase) for h in range(1, 6))
        pos += n + int(rng.integers(800, 4000))
    return np.clip(out, -1, 1).astype(np.float32)


def synthetic_audio(arg: str, shape, count, seed):
    length = _audio_shape(shape)
    hop = int(arg or AUDIO_HOP)
    return sliding_windows(speech_like(length + hop * (count - 1), seed), length, hop, count)


SOURCES = {"synthetic": synthetic, "video": video, "atari": atari, "audio": audio, "synthetic-audio": synthetic_audio}
