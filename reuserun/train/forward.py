"""Forward with reuse over one episode, recording what the backward needs.

Within an episode the weights are fixed. At each frame a conv position is recomputed iff some
input in its window changed (exact reuse; frame 0 computes everything). Each recomputed position
is a node: it keeps its value until it is recomputed again. Per frame and per level (the input,
then each conv output) the record holds the recomputed positions and their previous values, so
the backward can roll the buffers back in time. The reused Linear keeps per-pixel partial sums
(conv.pyx's SpatialGemmKernel) and the small head after it runs densely per frame.

Every output element is computed by the same kernel in the same order whichever positions a
frame recomputes, so the logits equal a dense run's bit for bit (tests/test_train.py checks it).

Memory per episode: the nodes (an int32 index plus the old value, C floats, per recomputed
position and level) plus, per frame, the head's activations (a few hundred floats at most);
dense buffers (one value buffer per level) are reused across frames. No per-frame copy of the
activations is kept.
"""
from __future__ import annotations

import numpy as np

from reuserun.kernels import conv as kconv
from reuserun.kernels import train as ktrain
from reuserun.kernels.info import ACT_CODES
from reuserun.runtime.session import InputError
from reuserun.train.graph import TrainNet

_EMPTY_PIX = np.empty(0, np.int32)


def head_forward(net: TrainNet, z0: np.ndarray) -> list[np.ndarray]:
    """The head's activations for one frame: [fc0 output, after each head op]."""
    acts = [z0]
    h = z0
    for op in net.head:
        if op[0] == "relu":
            h = np.maximum(h, np.float32(0))
        else:
            j = op[1]
            h = net.params[f"fc{j}.w"] @ h + net.params[f"fc{j}.b"]
        acts.append(h)
    return acts


class EpisodeForward:
    """Runs frames of one episode; `records` and `acts` hold what the backward needs.

    dense=True recomputes every position of every frame (the reference for exactness tests; the
    backward works on it too, with every node one frame long)."""

    def __init__(self, net: TrainNet, threads: int = 0, dense: bool = False):
        self.net, self.threads, self.dense = net, threads, dense
        self.x = np.zeros(net.convs[0].in_shape, np.float32)
        self.ys = [np.zeros(layer.out_shape, np.float32) for layer in net.convs]
        self.z0 = np.zeros(net.fc0_out, np.float32)
        shapes = [net.convs[0].in_shape] + [layer.out_shape for layer in net.convs]
        self.flat = [b.reshape(-1, b.shape[2]) for b in [self.x, *self.ys]]
        self.all_pix = [np.arange(h * w, dtype=np.int32) for h, w, _ in shapes]
        self.scratch = [np.empty(h * w, np.int32) for h, w, _ in shapes]
        self.masks = [np.zeros(h * w, np.uint8) for h, w, _ in shapes]
        self.old_in = np.empty(self.flat[0].shape, np.float32)
        self.reset()

    def reset(self) -> None:
        """Start an episode with the net's current weights."""
        self.x[:] = 0
        for y in self.ys:
            y[:] = 0
        self.kernels = []
        src = self.x
        for k, layer in enumerate(self.net.convs):
            w, b = self.net.params[f"conv{k}.w"], self.net.params[f"conv{k}.b"]
            packed, nocb = kconv.pack_conv_weights(w)
            o, i = w.shape[:2]
            self.kernels.append(kconv.ConvKernel(
                src, 0, self.ys[k], 0, packed, nocb, kconv.pad_channels(b, 1, o, nocb), None,
                layer.kernel, layer.strides, (0, 0, 0, 0), (1, 1), 1, i, o,
                ACT_CODES["relu"] if layer.relu else 0, 0.0, 0.0))
            src = self.ys[k]
        packed = self.net.params["fc0.w"]
        self.fc0 = kconv.SpatialGemmKernel(self.ys[-1], 0, packed, self.net.params["fc0.b"], self.z0,
                                           np.zeros(packed.shape[::2], np.float32))
        self.records: list[list[tuple[np.ndarray, np.ndarray | None]]] = []
        self.acts: list[list[np.ndarray]] = []
        self.consumed = False

    def __len__(self) -> int:
        return len(self.records)

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Run one frame (1, C, H, W); returns the logits (the policy is their softmax)."""
        if self.consumed:
            raise RuntimeError("this episode's record was used by a backward; call reset() first")
        want = self.net.input_shape
        frame = np.asarray(frame)
        if frame.shape != want:
            raise InputError(f"frame has shape {frame.shape}, the net takes {want}")
        if not np.isfinite(frame).all():  # ReLU would hide a NaN from the logits, not from dW
            raise InputError("frame has NaN or inf values")
        nhwc = np.ascontiguousarray(frame[0].transpose(1, 2, 0), np.float32).reshape(-1, want[1])
        t = len(self.records)
        if t == 0 or self.dense:
            old = None if t == 0 else self.flat[0].copy()
            self.flat[0][:] = nhwc
            pix = self.all_pix[0]
        else:
            n = ktrain.store_changed(nhwc, self.flat[0], self.scratch[0], self.old_in)
            pix, old = self.scratch[0][:n].copy(), self.old_in[:n].copy()
        rec = [(pix, old)]
        for k, layer in enumerate(self.net.convs):
            if t == 0 or self.dense:
                pix, old = self.all_pix[k + 1], None if t == 0 else self.flat[k + 1].copy()
            elif len(pix) == 0:
                pix, old = _EMPTY_PIX, None
            else:
                (_, w, _), (oh, ow, _) = layer.in_shape, layer.out_shape
                m = ktrain.dilate(pix, len(pix), w, oh, ow, *layer.kernel, *layer.strides,
                                  self.masks[k + 1], self.scratch[k + 1])
                pix = self.scratch[k + 1][:m].copy()
                old = self.flat[k + 1][pix]  # fancy indexing copies
            self.kernels[k].run(pix, len(pix), None, -1.0, self.threads)
            rec.append((pix, old))
        self.fc0.run(pix, len(pix), self.threads)
        acts = head_forward(self.net, self.z0.copy())
        self.records.append(rec)
        self.acts.append(acts)
        return acts[-1]

    def node_count(self) -> int:
        """Conv positions recomputed, summed over frames and conv layers (the nodes)."""
        return sum(len(p) for rec in self.records for p, _ in rec[1:])

    def memory_bytes(self) -> int:
        """Bytes held by the episode record: node indices and old values, per-frame head activations."""
        shared = {id(a) for a in self.all_pix}
        rec = sum((0 if id(p) in shared else p.nbytes) + (0 if o is None else o.nbytes)
                  for r in self.records for p, o in r)
        return rec + sum(a.nbytes for acts in self.acts for a in acts)
