"""Occlusion sensitivity (Zeiler & Fergus; Captum's Occlusion) on session variants.

Each window of the image is replaced by a baseline value and the model run again; a pixel's
attribution is the mean drop of the target score over the windows that cover it, as Captum
computes it. Every occluded image is a variant of the one reference, with its edited box
declared, so a window costs what its change reaches and the reference cache is never disturbed.
Windows are shared between forks of the session in threads: a variant's compiled steps run
without the GIL, so the forks' variants overlap.
"""
from __future__ import annotations

import numpy as np

from reuserun.kernels import region
from reuserun.runtime.variants import declared_share, on_forks


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window origins along one axis, as Captum places them: floor((size - patch) / stride) + 1."""
    if patch > size:
        raise ValueError(f"patch {patch} is larger than the image side {size}")
    return list(range(0, size - patch + 1, stride))


def _score(outputs, target: int) -> float:
    return float(np.asarray(outputs[0]).reshape(-1)[target])


def occlusion_map(sess, image: np.ndarray, patch: int = 16, stride: int = 8, target: int | None = None,
                  baseline: float = 0.0, progress: bool = False, workers: int | None = None) -> dict:
    """Sensitivity map of `target` (default: the reference's top class in output 0).

    image: the model input (1, C, H, W), or (1, H, W, C) for a channels-last input. workers:
    windows run on that many forks of the session in parallel threads, each with its share of
    sess.threads (default: one per thread); 1 runs them all on sess. Returns {"heat": (H, W), "target", "base_score",
    "windows", "mac_fraction"} where mac_fraction is the mean over the windows.
    """
    if stride < 1 or patch < 1:
        raise ValueError("patch and stride must be >= 1")
    name = sess.get_inputs()[0].name
    base = sess.run(None, {name: image})
    scores = np.asarray(base[0]).reshape(-1)
    target = int(np.argmax(scores)) if target is None else int(target)
    if not 0 <= target < scores.size:
        raise ValueError(f"target {target} is not an index of the model's first output ({scores.size} values)")
    H, W = image.shape[1:3] if name in sess.channels_last_inputs else image.shape[2:4]
    boxes = [(y, y + patch, x, x + patch) for y in window_starts(H, patch, stride)
             for x in window_starts(W, patch, stride)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(boxes), unit="window", desc="occlusion")
    try:
        results = on_forks(sess, len(boxes), declared_share(None, [[b] for b in boxes], base=image, fill=baseline),
                           sess.threads if workers is None else workers,
                           (lambda done, n: bar.update(done - bar.n)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    drops = np.array([scores[target] - _score(outs, target) for outs, _ in results], np.float64)
    heat = _box_sums(boxes, drops, H, W)
    count = np.rint(_box_sums(boxes, np.ones(len(boxes)), H, W))
    heat = np.where(count > 0, heat / np.maximum(count, 1), 0.0).astype(np.float32)
    return {"heat": heat, "target": target, "base_score": float(scores[target]), "windows": len(boxes),
            "mac_fraction": float(np.mean(sess.mac_fractions(np.array([c for _, c in results], np.int64))))}


def _box_sums(boxes, values, H: int, W: int) -> np.ndarray:
    """Per pixel, the sum of values[i] over the boxes i covering it, added in window order."""
    out = np.zeros((H, W), np.float64)
    region.add_boxes(out, np.asarray(boxes, np.int64).reshape(-1, 4), np.ascontiguousarray(values, np.float64))
    return out


def save_overlay(image_hwc: np.ndarray, heat: np.ndarray, path: str, title: str = "") -> None:
    """The heat map over the image, as a PNG (matplotlib, the [bench] extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("the PNG needs matplotlib: pip install 'reuserun[bench]'") from e
    fig, ax = plt.subplots(figsize=(5, 5))
    img = image_hwc - image_hwc.min()
    img = img / img.max() if img.max() > 0 else img
    ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
    lim = float(np.abs(heat).max()) or 1.0
    im = ax.imshow(heat, cmap="RdBu_r", alpha=0.55, vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=ax, fraction=0.046, label="score drop when occluded")
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
