"""Random small CNN graphs (as ONNX models) and random frame edits, for property tests.

A graph grows from the input by appending ops to randomly chosen existing tensors, tracking
(C, H, W) so every op is valid: convs of any kernel / stride / dilation / asymmetric pads /
groups, transposed convs, pools, activations, residual adds and muls, channel concat and split,
slices, pads and resizes.
"""
from __future__ import annotations

import numpy as np
from onnx import helper
from onnx_helpers import const, make_model

ACTS = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu", "Clip", "PRelu"]


class Skip(Exception):
    """No tensor fits the op drawn."""


class GraphGen:
    def __init__(self, draw, c: int, h: int, w: int):
        self.draw = draw  # draw(options_list) -> one option; draw(lo, hi) -> int
        self.nodes, self.inits = [], []
        self.tensors = [("x", (c, h, w))]
        self.heads = []
        self.k = 0
        self.rng = np.random.default_rng(draw.int(0, 2**31 - 1))

    def name(self, prefix):
        self.k += 1
        return f"{prefix}{self.k}"

    def weight(self, shape, scale=None):
        n = self.name("w")
        fan = int(np.prod(shape[1:])) or 1
        scale = scale or 1.0 / np.sqrt(fan)
        self.inits.append(const(n, (self.rng.standard_normal(shape) * scale).astype(np.float32)))
        return n

    def add(self, op, inputs, shape, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.tensors.append((out, shape))
        return out

    def pick(self, pred=lambda s: True):
        cands = [t for t in self.tensors if pred(t[1])]
        if not cands:
            raise Skip
        return cands[self.draw.int(0, len(cands) - 1)]

    # --- ops ----------------------------------------------------------------------------------
    def conv(self):
        x, (c, h, w) = self.pick()
        d = self.draw
        k = d.choice([1, 2, 3, 5])
        s = d.choice([1, 1, 2])
        dil = d.choice([1, 1, 2])
        pads = [d.int(0, k // 2 + 1) for _ in range(4)]
        eff = (k - 1) * dil + 1
        oh = (h + pads[0] + pads[2] - eff) // s + 1
        ow = (w + pads[1] + pads[3] - eff) // s + 1
        if oh < 1 or ow < 1:
            return
        groups = d.choice([1, 1, c] + ([2] if c % 2 == 0 else []))
        o = d.choice([c, 2 * c, 4, 8]) if groups == 1 else (c if groups == c and d.bool() else 2 * c)
        if o % groups:
            return
        wn = self.weight((o, c // groups, k, k))
        bn = self.weight((o,), 0.1)
        self.add("Conv", [x, wn, bn], (o, oh, ow), kernel_shape=[k, k], strides=[s, s],
                 dilations=[dil, dil], pads=pads, group=groups)

    def depthwise(self):
        """A 1x1 conv to a multiple of 8 channels, then a depthwise conv: the shape of
        MobileNet blocks, whose whole-block channel paths only such widths take."""
        x, (c, h, w) = self.pick()
        d = self.draw
        wide = d.choice([8, 16, 24, 40])
        y = self.add("Conv", [x, self.weight((wide, c, 1, 1)), self.weight((wide,), 0.1)], (wide, h, w),
                     kernel_shape=[1, 1])
        k, s, dil = d.choice([3, 3, 5, 7]), d.choice([1, 2]), d.choice([1, 1, 2])
        pads = [d.int(0, k // 2) for _ in range(4)]
        eff = (k - 1) * dil + 1
        oh = (h + pads[0] + pads[2] - eff) // s + 1
        ow = (w + pads[1] + pads[3] - eff) // s + 1
        if oh < 1 or ow < 1:
            return
        self.add("Conv", [y, self.weight((wide, 1, k, k)), self.weight((wide,), 0.1)], (wide, oh, ow),
                 kernel_shape=[k, k], strides=[s, s], dilations=[dil, dil], pads=pads, group=wide)

    def conv_transpose(self):
        x, (c, h, w) = self.pick(lambda s: s[1] <= 16 and s[2] <= 16)
        d = self.draw
        k, s = d.choice([(2, 2), (3, 2), (3, 1), (4, 2)])
        p = d.int(0, (k - 1) // 2)
        o = d.choice([2, 4, c])
        oh, ow = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        wn = self.weight((c, o, k, k))
        self.add("ConvTranspose", [x, wn, self.weight((o,), 0.1)], (o, oh, ow),
                 kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)

    def act(self):
        x, shape = self.pick()
        op = self.draw.choice(ACTS)
        if op == "LeakyRelu":
            self.add(op, [x], shape, alpha=0.1)
        elif op == "Elu":
            self.add(op, [x], shape, alpha=0.7)
        elif op == "Clip":
            self.add(op, [x, self._scalar(-0.5), self._scalar(0.8)], shape)
        elif op == "PRelu":
            slope = self.name("slope")
            self.inits.append(const(slope, self.rng.uniform(0, 0.5, (shape[0], 1, 1)).astype(np.float32)))
            self.add(op, [x, slope], shape)
        else:
            self.add(op, [x], shape)

    def _scalar(self, v):
        n = self.name("s")
        self.inits.append(const(n, np.array(v, np.float32)))
        return n

    def pool(self):
        x, (c, h, w) = self.pick(lambda s: s[1] >= 3 and s[2] >= 3)
        d = self.draw
        k, s = d.choice([(2, 2), (3, 1), (3, 2)])
        p = d.int(0, k // 2)
        op = d.choice(["MaxPool", "AveragePool"])
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        if op == "AveragePool":
            attrs["count_include_pad"] = d.int(0, 1)
        self.add(op, [x], (c, oh, ow), **attrs)

    def binary(self):
        a, sa = self.pick()
        b = self.pick(lambda s: s == sa)
        d = self.draw
        op = d.choice(["Add", "Mul", "Sub", "Add"])
        if d.bool():
            # a per-channel constant operand (folded BN, scales)
            cn = self.name("c")
            self.inits.append(const(cn, self.rng.uniform(0.5, 1.5, (sa[0], 1, 1)).astype(np.float32)))
            self.add(op, [a, cn], sa)
        else:
            self.add(op, [a, b[0]], sa)

    def concat(self):
        a, sa = self.pick()
        b = self.pick(lambda s: s[1:] == sa[1:])
        self.add("Concat", [a, b[0]], (sa[0] + b[1][0], sa[1], sa[2]), axis=1)

    def split(self):
        x, (c, h, w) = self.pick(lambda s: s[0] >= 2)
        c1 = self.draw.int(1, c - 1)
        o1, o2 = self.name("split"), self.name("split")
        sizes = self._int64([c1, c - c1])
        self.nodes.append(helper.make_node("Split", [x, sizes], [o1, o2], name=o1, axis=1))
        self.tensors += [(o1, (c1, h, w)), (o2, (c - c1, h, w))]

    def _int64(self, v):
        n = self.name("i")
        self.inits.append(const(n, np.array(v, np.int64)))
        return n

    def slice(self):
        x, (c, h, w) = self.pick(lambda s: s[1] >= 4 and s[2] >= 4)
        d = self.draw
        y0, x0 = d.int(0, h // 2), d.int(0, w // 2)
        st = d.choice([1, 1, 2])
        c0 = d.int(0, c - 1)
        oh, ow = len(range(y0, h, st)), len(range(x0, w, st))
        self.add("Slice", [x, self._int64([c0, y0, x0]), self._int64([c, h, w]),
                           self._int64([1, 2, 3]), self._int64([1, st, st])], (c - c0, oh, ow))

    def pad(self):
        x, (c, h, w) = self.pick(lambda s: s[1] >= 3 and s[2] >= 3)
        d = self.draw
        mode = d.choice(["constant", "reflect", "edge"])
        t, l, b, r = (d.int(0, 2) for _ in range(4))
        self.add("Pad", [x, self._int64([0, 0, t, l, 0, 0, b, r]), self._scalar(0.25)],
                 (c, h + t + b, w + l + r), mode=mode)

    def resize(self):
        x, (c, h, w) = self.pick(lambda s: s[1] <= 16 and s[2] <= 16)
        d = self.draw
        mode = d.choice(["nearest", "linear"])
        coord = d.choice(["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"])
        sy, sx = d.choice([2.0, 2.0, 0.5, 3.0]), d.choice([2.0, 1.0])
        oh, ow = int(h * sy), int(w * sx)
        if oh < 1 or ow < 1:
            return
        attrs = dict(mode=mode, coordinate_transformation_mode=coord)
        if mode == "nearest":
            attrs["nearest_mode"] = "floor" if coord == "asymmetric" else "round_prefer_floor"
        scales = self.name("scales")
        self.inits.append(const(scales, np.array([1, 1, sy, sx], np.float32)))
        self.add("Resize", [x, "", scales], (c, oh, ow), **attrs)

    def squeeze_excite(self):
        """A global pool, 1x1 convs on the pooled vector and a gate, multiplied back into the
        map (MobileNetV3, EfficientNet); or a pooled vector added to the map: a change anywhere
        reaches every position through the vector."""
        x, (c, h, w) = self.pick(lambda s: s[1] * s[2] > 1)
        d = self.draw
        pool = d.choice(["GlobalAveragePool", "GlobalAveragePool", "GlobalMaxPool"])
        v = self.add(pool, [x], (c, 1, 1))
        if d.bool():
            r = d.choice([1, 2, 4])
            v = self.add("Conv", [v, self.weight((r, c, 1, 1)), self.weight((r,), 0.1)], (r, 1, 1),
                         kernel_shape=[1, 1])
            v = self.add("Relu", [v], (r, 1, 1))
            v = self.add("Conv", [v, self.weight((c, r, 1, 1)), self.weight((c,), 0.1)], (c, 1, 1),
                         kernel_shape=[1, 1])
        gate = d.choice(["Sigmoid", "HardSigmoid", "none"])
        if gate != "none":
            v = self.add(gate, [v], (c, 1, 1))
        self.add(d.choice(["Mul", "Mul", "Add"]), [x, v], (c, h, w))

    def shuffle(self):
        """ShuffleNet's channel shuffle: Reshape to (1, g, C / g, H, W), Transpose, Reshape back."""
        x, (c, h, w) = self.pick(lambda s: s[0] % 2 == 0 and s[0] >= 4)
        g = self.draw.choice([g for g in (2, 3, 4) if c % g == 0])
        r = self.add("Reshape", [x, self._int64([1, g, c // g, h, w])], (g, c // g, h, w))
        t = self.add("Transpose", [r], (c // g, g, h, w), perm=[0, 2, 1, 3, 4])
        self.add("Reshape", [t, self._int64([1, c, h, w])], (c, h, w))
        # the 5-D intermediates are no spatial tensors for other ops to pick
        self.tensors = [t_ for t_ in self.tensors if t_[0] not in (r, t)]

    def head(self):
        """Flatten -> Gemm (a classifier or policy head), an output of its own."""
        x, (c, h, w) = self.pick()
        d = self.draw
        n, trans_b = d.int(1, 12), d.bool()
        flat, out = self.name("flatten"), self.name("gemm")
        wn = self.weight((n, c * h * w) if trans_b else (c * h * w, n))
        self.nodes.append(helper.make_node("Flatten", [x], [flat], name=flat, axis=1))
        self.nodes.append(helper.make_node("Gemm", [flat, wn, self.weight((n,), 0.1)], [out], name=out,
                                           transB=int(trans_b), alpha=d.choice([1.0, 0.5])))
        self.heads.append((out, (1, n)))

    def partition(self):
        """Ops reuserun has no kernel for, which run in an onnxruntime partition: tf2onnx's
        div_no_nan (Equal's bool mask read by Where) or Sqrt(Abs(x))."""
        a, sa = self.pick()
        if self.draw.bool():
            zero = self._scalar(0.0)
            b = self.pick(lambda s: s == sa)[0]
            mask = self.add("Equal", [b, zero], sa)
            q = self.add("Div", [a, b], sa)
            self.add("Where", [mask, zero, q], sa)
            self.tensors = [t for t in self.tensors if t[0] != mask]  # bool: no float op reads it
        else:
            self.add("Sqrt", [self.add("Abs", [a], sa)], sa)

    OPS = ["conv", "conv", "conv", "depthwise", "depthwise", "act", "act", "pool", "binary", "concat", "split", "slice",
           "pad", "resize", "conv_transpose", "head", "squeeze_excite", "squeeze_excite", "shuffle", "partition"]

    def build(self, n_ops: int):
        for _ in range(n_ops):
            try:
                getattr(self, self.draw.choice(self.OPS))()
            except Skip:
                pass
        # every tensor without a consumer is an output, so all of them are checked
        used = {i for n in self.nodes for i in n.input}
        outs = [(t, (1,) + s) for t, s in self.tensors[1:] if t not in used]
        if not outs:
            outs = [(self.tensors[-1][0], (1,) + self.tensors[-1][1])]
        outs += self.heads
        c, h, w = self.tensors[0][1]
        return make_model(self.nodes, [("x", (1, c, h, w))], outs, self.inits)


class Draw:
    """Adapts hypothesis' `data.draw` to the small interface GraphGen uses."""

    def __init__(self, data, st):
        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, options):
        return self.data.draw(self.st.sampled_from(options))

    def bool(self):
        return self.data.draw(self.st.booleans())


def random_graph(data, channels: tuple, size: tuple, ops: tuple):
    """A random model drawn through hypothesis: (draw, model, rng, (c, h, w)) with c, h, w and
    the op count drawn from the given inclusive ranges, rng seeded from the draw."""
    from hypothesis import strategies as st
    d = Draw(data, st)
    c, h, w = d.int(*channels), d.int(*size), d.int(*size)
    model = GraphGen(d, c, h, w).build(d.int(*ops))
    return d, model, np.random.default_rng(d.int(0, 1000)), (c, h, w)


def edit_frames(rng: np.random.Generator, first: np.ndarray, n: int, kind: str):
    """n frames after `first`, each a random edit of the one before: a few pixels, a small
    rectangle, several rectangles, nothing, or everything."""
    frames, cur = [], first.copy()
    _, c, h, w = first.shape
    for _ in range(n):
        cur = cur.copy()
        k = kind if kind != "mixed" else rng.choice(["pixels", "rect", "rects", "none", "all"])
        if k == "pixels":
            for _ in range(rng.integers(1, 4)):
                cur[0, :, rng.integers(h), rng.integers(w)] = rng.standard_normal(c)
        elif k in ("rect", "rects"):
            for _ in range(1 if k == "rect" else rng.integers(2, 4)):
                y0, x0 = rng.integers(h), rng.integers(w)
                y1, x1 = min(h, y0 + rng.integers(1, 5)), min(w, x0 + rng.integers(1, 5))
                cur[0, :, y0:y1, x0:x1] = rng.standard_normal((c, y1 - y0, x1 - x0))
        elif k == "all":
            cur = cur + np.float32(0.01) * rng.standard_normal(cur.shape).astype(np.float32)
        frames.append(cur.astype(np.float32))
    return frames
