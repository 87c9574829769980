"""Train a small CenterNet-style detector on synthetic camera-like scenes and export it to ONNX
(needs torch, the [bench] extra; reuserun itself does not).

Approximate mode has to be judged on a trained network: random weights react to sensor noise
and to a moving object differently from a network that has learned to ignore the one and
respond to the other. The scenes follow tools/camera_clip.py (textured static background,
Gaussian sensor noise, brightness flicker, flat-coloured square objects), with random textures,
object counts, sizes and colours per sample.

Network: a YOLO-style CSP backbone to stride 16 (Conv-BN-SiLU, residual bottlenecks), an FPN that
upsamples back to stride 4, and CenterNet heads: a sigmoid centre heat map (1 channel) and box
sizes (2 channels, in pixels / 64), both at stride 4. Fully convolutional, so the exported model
runs at any input size that is a multiple of 16. Loss: CenterNet's focal loss plus binary cross-entropy on the
heat map, L1 on the size map.

    python tools/train_detector.py bench/assets/detector.onnx --steps 1500 --size 128
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_models import Bottleneck, cbs, export  # noqa: E402

STRIDE = 4


class CenterDetector(nn.Module):
    def __init__(self, w: int = 16):
        super().__init__()
        self.s2 = nn.Sequential(cbs(3, w, 3, 2), cbs(w, w, 3))                        # /2
        self.s4 = nn.Sequential(cbs(w, 2 * w, 3, 2), Bottleneck(2 * w))               # /4
        self.s8 = nn.Sequential(cbs(2 * w, 4 * w, 3, 2), Bottleneck(4 * w))           # /8
        self.s16 = nn.Sequential(cbs(4 * w, 6 * w, 3, 2), Bottleneck(6 * w))          # /16
        self.lat16, self.lat8, self.lat4 = cbs(6 * w, 2 * w), cbs(4 * w, 2 * w), cbs(2 * w, 2 * w)
        self.fuse = cbs(2 * w, 2 * w, 3)
        self.heat = nn.Sequential(cbs(2 * w, w, 3), nn.Conv2d(w, 1, 1))
        self.size = nn.Sequential(cbs(2 * w, w, 3), nn.Conv2d(w, 2, 1))
        self.heat[-1].bias.data.fill_(-2.2)  # CenterNet's prior: background almost everywhere

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        c4 = self.s4(self.s2(x))
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        p8 = self.lat8(c8) + up(self.lat16(c16))
        p4 = self.fuse(self.lat4(c4) + up(p8))
        return torch.sigmoid(self.heat(p4)), self.size(p4)


def scene(rng: np.random.Generator, size: int):
    """One frame in [0, 1] (3, size, size) and its boxes [(cy, cx, h, w)] in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(60, 180) + rng.uniform(10, 50) * np.sin(xx / rng.uniform(4, 16) + rng.uniform(0, 6)) \
        * np.cos(yy / rng.uniform(4, 16) + rng.uniform(0, 6))
    tint = rng.uniform(0.7, 1.1, 3)
    img = base[..., None] * tint + rng.uniform(0, 40, 3)
    block = int(rng.integers(4, 12))
    img += rng.normal(0, rng.uniform(4, 16), (size // block + 1, size // block + 1, 3)).repeat(block, 0) \
        .repeat(block, 1)[:size, :size]
    img *= 1.0 + 0.01 * rng.standard_normal()
    boxes = []
    for _ in range(int(rng.integers(0, 4))):
        side = int(rng.integers(8, 48))
        y, x = rng.integers(-side // 3, size - 2 * side // 3, 2)
        img[max(y, 0):y + side, max(x, 0):x + side] = rng.uniform(20, 235, 3)
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + side, size), min(x + side, size)
        boxes.append(((y0 + y1) / 2, (x0 + x1) / 2, y1 - y0, x1 - x0))
    img += rng.normal(0, rng.uniform(0, 4), img.shape)
    return np.clip(img, 0, 255).astype(np.float32).transpose(2, 0, 1) / 255.0, boxes


def targets(boxes, size: int):
    """Targets at stride 4: a Gaussian per centre (CenterNet), and sizes on every cell of an
    object (0 on the background), so the size map means something everywhere."""
    n = size // STRIDE
    heat, wh = np.zeros((1, n, n), np.float32), np.zeros((2, n, n), np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    for cy, cx, h, w in boxes:
        y, x = min(int(cy / STRIDE), n - 1), min(int(cx / STRIDE), n - 1)
        sigma = max(min(h, w) / STRIDE / 6.0, 0.5)
        heat[0] = np.maximum(heat[0], np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2)))
        inside = (np.abs(yy + 0.5 - cy / STRIDE) <= h / STRIDE / 2) & (np.abs(xx + 0.5 - cx / STRIDE) <= w / STRIDE / 2)
        wh[:, inside] = np.array([h / 64.0, w / 64.0], np.float32)[:, None]
    return heat, wh


def batch(rng, n: int, size: int):
    samples = []
    for _ in range(n):
        x, boxes = scene(rng, size)
        samples.append((x, *targets(boxes, size)))
    return [torch.from_numpy(np.stack(a)) for a in zip(*samples)]


def focal_loss(pred, gt):
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = -(torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def train(steps: int, size: int, batch_size: int, seed: int, log=print) -> CenterDetector:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CenterDetector()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    t0 = time.perf_counter()
    for step in range(steps):
        x, heat, wh = batch(rng, batch_size, size)
        ph, pwh = model(x)
        # the BCE term pushes the background well below focal loss's resting level (~0.01), where
        # sensor noise would move it most (the sigmoid's slope)
        loss = focal_loss(ph, heat) + 10.0 * F.binary_cross_entropy(ph, heat) + 10.0 * torch.abs(pwh - wh).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - t0:.0f} s")
    return model.eval()


def heat_recall(model: CenterDetector, size: int, seed: int, n: int = 64) -> float:
    """Fraction of held-out objects whose centre cell holds a heat-map peak above 0.3."""
    rng = np.random.default_rng(seed + 1000)
    hit = total = 0
    with torch.no_grad():
        for _ in range(n):
            x, boxes = scene(rng, size)
            heat = model(torch.from_numpy(x)[None])[0][0, 0]
            peaks = (heat == F.max_pool2d(heat[None, None], 3, 1, 1)[0, 0]) & (heat > 0.3)
            for cy, cx, _, _ in boxes:
                y, x0 = int(cy / STRIDE), int(cx / STRIDE)
                hit += int(peaks[max(y - 1, 0):y + 2, max(x0 - 1, 0):x0 + 2].any())
                total += 1
    return hit / max(total, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--size", type=int, default=128, help="training crop size (multiple of 16)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--export-size", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = train(args.steps, args.size, args.batch, args.seed)
    print(f"held-out centre recall: {heat_recall(model, args.size, args.seed):.2f}")
    export(model, (1, 3, args.export_size, args.export_size), args.path)
    print(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
