"""Built-in benchmark models, generated in code with onnx.helper and numpy (no torch, no files).

Every model is opset 17, float32, with a static input "images" of shape (1, 3, size, size)
(the Atari policy net takes "frame", (1, 1, h, w)). Weights are random but deterministic from a
seed, He-scaled so activations stay O(1) (rms within about 0.1-5) for inputs in [0, 1]. Convs
are followed by BatchNormalization nodes where a real network would have them, so the
front-end's BN folding is exercised; the last conv of each residual branch gets a smaller BN
gamma so residual sums do not grow with depth.

MACs at the default size (counted by `macs`; the layouts check against published figures:
resnet_like(224, width=64) gives ResNet-18's 1.814 G, mobilenet_v3_like(224) 217 M):
    default_model() = yolo_like(320)   1,139,443,200  (YOLOv5s layout at 3/4 width; 4.56 G at 640)
    resnet_like(320)                     985,753,600  (ResNet-18 at half width)
    mobilenet_v3_like(320)               437,838,848  (MobileNetV3-Large)
    unet_like(320)                     1,009,254,400  (widths 8-64; most of it at full resolution)
    atari_policy() (20/40, 105x80)        58,555,560  (80/160: 897,428,640)

`MODELS` maps the benchmark names to their constructors; each takes `size` (a multiple of 32).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


# E[f(z)^2] for z ~ N(0, 1): how much of its input's second moment each activation keeps.
# (ReLU's 0.5 is where He's 2/fan_in comes from.) Measured once with numpy.
_ACT_M2 = {"relu": 0.5, "leaky": 0.505, "silu": 0.356, "hswish": 0.332}
# Gates give about the same second moment whatever their input's scale.
_GATE_M2 = {"hsigmoid": 0.278, "sigmoid": 0.293}


class _Builder:
    """Accumulates nodes and initializers; remembers each tensor's channel count.

    Knowing the channels lets each layer call say only what it produces (`conv(x, 64, 3)`),
    which keeps the model definitions below readable. It also tracks a rough second moment per
    tensor, so each conv's He-style weights are scaled to give its output a second moment near 1
    whatever came before (SiLU and HardSwish keep less than ReLU; residual sums keep more).
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.ch: dict[str, int] = {}
        self.m2: dict[str, float] = {}
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def input(self, name: str, channels: int) -> str:
        self.ch[name] = channels
        self.m2[name] = 1.0 / 3  # uniform [0, 1] pixels
        return name

    def const(self, value: np.ndarray, prefix: str) -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], channels: int, m2: float | None = None,
           **attrs) -> str:
        """Adds a node; its output's second moment is `m2`, or its first input's if not given."""
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        self.ch[out] = channels
        self.m2[out] = self.m2[inputs[0]] if m2 is None else m2
        return out

    def weight(self, x: str, shape: tuple[int, ...], fan_in: int) -> str:
        w = self.rng.normal(0.0, np.sqrt(1.0 / (fan_in * self.m2[x])), shape)
        return self.const(w.astype(np.float32), "w")

    # --- layers -----------------------------------------------------------------------------

    def conv(self, x: str, cout: int, k: int, s: int = 1, group: int = 1, act: str | None = "relu",
             bn: bool = True, gamma: float = 1.0) -> str:
        cin = self.ch[x]
        inputs = [x, self.weight(x, (cout, cin // group, k, k), cin // group * k * k)]
        if not bn:
            inputs.append(self.const(self.rng.normal(0.0, 0.1, cout).astype(np.float32), "b"))
        p = k // 2
        y = self.op("Conv", inputs, cout, m2=1.0, kernel_shape=[k, k], strides=[s, s],
                    pads=[p, p, p, p], group=group)
        if bn:
            y = self.batchnorm(y, gamma)
        return self.act(y, act)

    def batchnorm(self, x: str, gamma: float = 1.0) -> str:
        # Stats near identity, but not exactly: folding must get scale, shift, mean and var right.
        c, r = self.ch[x], self.rng
        params = [gamma * r.uniform(0.8, 1.2, c), r.normal(0.0, 0.1, c),
                  r.normal(0.0, 0.1, c), r.uniform(0.8, 1.25, c)]
        names = [self.const(p.astype(np.float32), n)
                 for p, n in zip(params, ("bn_scale", "bn_bias", "bn_mean", "bn_var"))]
        return self.op("BatchNormalization", [x, *names], c, m2=self.m2[x] * gamma**2,
                       epsilon=1e-5)

    def act(self, x: str, kind: str | None) -> str:
        c = self.ch[x]
        if kind is None:
            return x
        m2 = _GATE_M2[kind] if kind in _GATE_M2 else _ACT_M2[kind] * self.m2[x]
        if kind == "relu":
            return self.op("Relu", [x], c, m2)
        if kind == "silu":  # as exporters write it, so the front-end sees the two-node pattern
            return self.op("Mul", [x, self.op("Sigmoid", [x], c)], c, m2)
        if kind == "leaky":
            return self.op("LeakyRelu", [x], c, m2, alpha=0.1)
        if kind == "hswish":
            return self.op("HardSwish", [x], c, m2)
        if kind == "hsigmoid":  # torch's hardsigmoid: relu6(x + 3) / 6
            return self.op("HardSigmoid", [x], c, m2, alpha=1.0 / 6, beta=0.5)
        if kind == "sigmoid":
            return self.op("Sigmoid", [x], c, m2)
        raise ValueError(f"unknown activation {kind!r}")

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b], self.ch[a], self.m2[a] * self.m2[b])

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b], self.ch[a], self.m2[a] + self.m2[b])

    def concat(self, xs: list[str]) -> str:
        c = sum(self.ch[x] for x in xs)
        return self.op("Concat", xs, c, sum(self.ch[x] * self.m2[x] for x in xs) / c, axis=1)

    def maxpool(self, x: str, k: int, s: int, p: int) -> str:
        # The max of a window has about twice the second moment of one pixel (measured).
        return self.op("MaxPool", [x], self.ch[x], 2.0 * self.m2[x], kernel_shape=[k, k],
                       strides=[s, s], pads=[p, p, p, p])

    def upsample(self, x: str, mode: str = "nearest") -> str:
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        if mode == "nearest":  # what torch exports for nn.Upsample(scale_factor=2)
            attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor")
        else:  # bilinear, align_corners=False
            attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
        return self.op("Resize", [x, "", scales], self.ch[x], **attrs)

    def conv_transpose(self, x: str, cout: int, k: int = 2, s: int = 2) -> str:
        cin = self.ch[x]
        # Each output pixel of a k=s transpose conv sees one input pixel: fan_in is cin.
        y = self.op("ConvTranspose", [x, self.weight(x, (cin, cout, k, k), cin)], cout, 1.0,
                    kernel_shape=[k, k], strides=[s, s])
        return self.act(self.batchnorm(y), "relu")

    def gap(self, x: str) -> str:
        return self.op("GlobalAveragePool", [x], self.ch[x])

    def linear(self, x: str, cout: int, fan_in: int) -> str:
        """Flatten + Gemm with transB=1, the way torch exports nn.Linear."""
        flat = self.op("Flatten", [x], fan_in, axis=1)
        b = self.rng.normal(0.0, 0.1, cout).astype(np.float32)
        return self.op("Gemm", [flat, self.weight(x, (cout, fan_in), fan_in),
                                self.const(b, "fc_b")], cout, 1.0, transB=1)

    def model(self, inputs: dict[str, tuple[int, ...]], outputs: list[str],
              name: str) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, name, ins, outs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="reuserun.zoo")
        m.ir_version = 8  # opset 17 needs IR >= 8; pinned so older onnxruntimes still load it
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        onnx.checker.check_model(m)
        return m


def _check_size(size: int, multiple: int = 32) -> None:
    if size <= 0 or size % multiple:
        raise ValueError(f"size must be a positive multiple of {multiple}, got {size}")


# --- YOLO (the bench default) ---------------------------------------------------------------

def _c3(b: _Builder, x: str, cout: int, n: int, act: str, shortcut: bool = True) -> str:
    """YOLOv5's C3: two 1x1 halves, n bottlenecks (1x1 then 3x3, residual) on one, concat, 1x1."""
    h = cout // 2
    y = b.conv(x, h, 1, act=act)
    for _ in range(n):
        z = b.conv(b.conv(y, h, 1, act=act), h, 3, act=act, gamma=0.5)
        y = b.add(y, z) if shortcut else z
    return b.conv(b.concat([y, b.conv(x, h, 1, act=act)]), cout, 1, act=act)


def _sppf(b: _Builder, x: str, act: str) -> str:
    c = b.ch[x]
    y = b.conv(x, c // 2, 1, act=act)
    p1 = b.maxpool(y, 5, 1, 2)
    p2 = b.maxpool(p1, 5, 1, 2)
    p3 = b.maxpool(p2, 5, 1, 2)
    return b.conv(b.concat([y, p1, p2, p3]), c, 1, act=act)


def yolo_like(size: int = 320, width: int = 24, act: str = "silu", classes: int = 80,
              seed: int = 0) -> onnx.ModelProto:
    """YOLOv5s-style detector: CSP backbone, SPPF, FPN+PAN neck, 1x1 heads at strides 8/16/32.

    Outputs the three raw head maps (1, 3*(5+classes), size/s, size/s); no reshape or decode.
    `act` is "silu" (Sigmoid+Mul) or "leaky".
    """
    _check_size(size)
    w = [width * m for m in (1, 2, 4, 8, 16)]
    b = _Builder(seed)
    x = b.input("images", 3)
    x = b.conv(x, w[0], 3, 2, act=act)                                      # /2
    x = _c3(b, b.conv(x, w[1], 3, 2, act=act), w[1], 1, act)                 # /4
    c3 = _c3(b, b.conv(x, w[2], 3, 2, act=act), w[2], 2, act)                # /8
    c4 = _c3(b, b.conv(c3, w[3], 3, 2, act=act), w[3], 3, act)               # /16
    c5 = _sppf(b, _c3(b, b.conv(c4, w[4], 3, 2, act=act), w[4], 1, act), act)  # /32
    # FPN top-down.
    h5 = b.conv(c5, w[3], 1, act=act)
    p4 = _c3(b, b.concat([b.upsample(h5), c4]), w[3], 1, act, shortcut=False)
    h4 = b.conv(p4, w[2], 1, act=act)
    p3 = _c3(b, b.concat([b.upsample(h4), c3]), w[2], 1, act, shortcut=False)
    # PAN bottom-up.
    n4 = _c3(b, b.concat([b.conv(p3, w[2], 3, 2, act=act), h4]), w[3], 1, act, shortcut=False)
    n5 = _c3(b, b.concat([b.conv(n4, w[3], 3, 2, act=act), h5]), w[4], 1, act, shortcut=False)
    no = 3 * (5 + classes)
    outs = [b.conv(p, no, 1, act=None, bn=False) for p in (p3, n4, n5)]
    return b.model({"images": (1, 3, size, size)}, outs, "yolo_like")


def default_model(size: int = 320) -> onnx.ModelProto:
    """The `reuserun bench` default: yolo_like at 320x320, about 1.14 GMAC."""
    return yolo_like(size)


# --- ResNet ---------------------------------------------------------------------------------

def resnet_like(size: int = 320, width: int = 32, classes: int = 1000,
                seed: int = 1) -> onnx.ModelProto:
    """ResNet-18 layout (7x7 stem, maxpool, 4 stages of 2 basic blocks, GAP + Gemm), width/2."""
    _check_size(size)
    b = _Builder(seed)
    x = b.input("images", 3)
    x = b.maxpool(b.conv(x, width, 7, 2), 3, 2, 1)
    for stage in range(4):
        c = width << stage
        for block in range(2):
            s = 2 if stage > 0 and block == 0 else 1
            y = b.conv(b.conv(x, c, 3, s), c, 3, act=None, gamma=0.5)
            short = b.conv(x, c, 1, s, act=None) if s != 1 or b.ch[x] != c else x
            x = b.act(b.add(y, short), "relu")
    out = b.linear(b.gap(x), classes, b.ch[x])
    return b.model({"images": (1, 3, size, size)}, [out], "resnet_like")


# --- MobileNetV3 ----------------------------------------------------------------------------

# MobileNetV3-Large bottlenecks: kernel, expanded channels, out channels, squeeze-excite, act, stride.
_MBV3_LARGE = [
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
]


def _squeeze_excite(b: _Builder, x: str) -> str:
    c = b.ch[x]
    mid = max(8, (c // 4 + 4) // 8 * 8)  # torchvision's _make_divisible(c / 4, 8)
    s = b.conv(b.gap(x), mid, 1, act="relu", bn=False)
    s = b.conv(s, c, 1, act="hsigmoid", bn=False)
    return b.mul(x, s)


def mobilenet_v3_like(size: int = 320, classes: int = 1000, seed: int = 2) -> onnx.ModelProto:
    """MobileNetV3-Large: depthwise convs, HardSwish, squeeze-excite (GAP -> 1x1 -> HardSigmoid -> Mul)."""
    _check_size(size)
    b = _Builder(seed)
    x = b.conv(b.input("images", 3), 16, 3, 2, act="hswish")
    for k, exp, out, se, act, s in _MBV3_LARGE:
        y = b.conv(x, exp, 1, act=act) if exp != b.ch[x] else x
        y = b.conv(y, exp, k, s, group=exp, act=act)
        if se:
            y = _squeeze_excite(b, y)
        y = b.conv(y, out, 1, act=None, gamma=0.5)
        x = b.add(x, y) if s == 1 and b.ch[x] == out else y
    x = b.gap(b.conv(x, 960, 1, act="hswish"))
    x = b.act(b.linear(x, 1280, 960), "hswish")
    out = b.linear(x, classes, 1280)
    return b.model({"images": (1, 3, size, size)}, [out], "mobilenet_v3_like")


# --- U-Net ----------------------------------------------------------------------------------

def unet_like(size: int = 320, width: int = 8, seed: int = 3) -> onnx.ModelProto:
    """U-Net: MaxPool encoder; decoder of bilinear Resize x2, ConvTranspose 2x2 s2 and Resize,
    each followed by Concat with the skip; 1x1 sigmoid head at full resolution, one channel."""
    _check_size(size, 8)

    def block(x: str, c: int) -> str:
        return b.conv(b.conv(x, c, 3), c, 3)

    b = _Builder(seed)
    e0 = block(b.input("images", 3), width)                 # full resolution
    e1 = block(b.maxpool(e0, 2, 2, 0), width * 2)            # /2
    e2 = block(b.maxpool(e1, 2, 2, 0), width * 4)            # /4
    mid = block(b.maxpool(e2, 2, 2, 0), width * 8)           # /8
    d2 = block(b.concat([b.upsample(mid, "linear"), e2]), width * 4)
    d1 = block(b.concat([b.conv_transpose(d2, width * 2), e1]), width * 2)
    d0 = block(b.concat([b.upsample(d1, "linear"), e0]), width)
    out = b.conv(d0, 1, 1, act="sigmoid", bn=False)
    return b.model({"images": (1, 3, size, size)}, [out], "unet_like")


# --- The seed paper's Atari policy net ------------------------------------------------------

def atari_policy(n1: int = 20, n2: int = 40, h: int = 105, w: int = 80, actions: int = 6,
                 seed: int = 4) -> onnx.ModelProto:
    """Conv(1,n1,3) - Relu - Conv(n1,n2,3) - Relu - Flatten - Gemm(actions) - Softmax.

    Input "frame" (1, 1, h, w); unpadded stride-1 convs, so the Gemm sees n2*(h-4)*(w-4) features.
    The defaults are the paper's smallest net on frames subsampled by 2 (105x80).
    """
    b = _Builder(seed)
    x = b.input("frame", 1)
    for c in (n1, n2):
        bias = b.rng.normal(0.0, 0.1, c).astype(np.float32)
        y = b.op("Conv", [x, b.weight(x, (c, b.ch[x], 3, 3), b.ch[x] * 9), b.const(bias, "b")],
                 c, 1.0, kernel_shape=[3, 3])
        x = b.act(y, "relu")
    logits = b.linear(x, actions, n2 * (h - 4) * (w - 4))
    out = b.op("Softmax", [logits], actions, axis=1)
    return b.model({"frame": (1, 1, h, w)}, [out], "atari_policy")


def nature_dqn(frames: int = 4, size: int = 84, actions: int = 6, seed: int = 5) -> onnx.ModelProto:
    """Nature-DQN (Mnih et al. 2015): a stack of the last `frames` frames as input channels,
    Conv(32,8,s4) - Relu - Conv(64,4,s2) - Relu - Conv(64,3,s1) - Relu - Linear(512) - Relu -
    Linear(actions). Input "frames" (1, frames, size, size); output the Q-values."""
    b = _Builder(seed)
    x = b.input("frames", frames)
    hw = size
    for c, k, s in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        bias = b.rng.normal(0.0, 0.1, c).astype(np.float32)
        y = b.op("Conv", [x, b.weight(x, (c, b.ch[x], k, k), b.ch[x] * k * k), b.const(bias, "b")],
                 c, 1.0, kernel_shape=[k, k], strides=[s, s])
        x = b.act(y, "relu")
        hw = (hw - k) // s + 1
    hidden = b.act(b.linear(x, 512, 64 * hw * hw), "relu")
    flat_w = b.weight(hidden, (actions, 512), 512)
    q = b.op("Gemm", [hidden, flat_w, b.const(np.zeros(actions, np.float32), "fc_b")], actions, 1.0, transB=1)
    return b.model({"frames": (1, frames, size, size)}, [q], "nature_dqn")


def kws_1d(samples: int = 16000, classes: int = 12, width: int = 32, seed: int = 6) -> onnx.ModelProto:
    """Keyword spotting on raw audio (1 s at 16 kHz): Conv1d(40, s4) - MaxPool2 - three
    Conv1d(3) / MaxPool2 stages - Conv1d(3) - GlobalAveragePool - Gemm. Its cumulative strides are
    4, 8, 16 and 32, all dividing a 10 ms hop (160 samples), so every conv cache can move with a
    sliding window; input "audio" (1, 1, samples)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(name, shape, fan_in):
        he = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        inits.append(numpy_helper.from_array(he.astype(np.float32), name))
        return name

    def conv(x, cin, cout, k, s, i):
        w = param(f"w{i}", (cout, cin, k), cin * k)
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [x, w, f"b{i}"], [f"c{i}"], kernel_shape=[k], strides=[s],
                                      pads=[(k - s) // 2, k - s - (k - s) // 2] if s > 1 else [k // 2, k // 2]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    def pool(x, i):
        nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2], strides=[2]))
        return f"p{i}"

    x = pool(conv("audio", 1, width, 40, 4, 1), 1)
    x = pool(conv(x, width, 2 * width, 3, 1, 2), 2)
    x = pool(conv(x, 2 * width, 2 * width, 3, 1, 3), 3)
    x = conv(conv(x, 2 * width, 4 * width, 3, 1, 4), 4 * width, 4 * width, 3, 1, 5)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    param("fc_w", (classes, 4 * width), 4 * width)
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, samples])
    graph = helper.make_graph(nodes, "kws_1d", [audio],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reuserun.zoo")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


MODELS = {"yolo": yolo_like, "resnet": resnet_like, "mobilenet": mobilenet_v3_like,
          "unet": unet_like, "kws": kws_1d}
DEFAULT_SIZES = {"kws": 16000}  # samples for the 1-D model; image models default to 320 px
IMAGE_MODELS = ("mobilenet", "resnet", "unet", "yolo")  # (1, 3, S, S) inputs


# --- MAC counting ---------------------------------------------------------------------------

def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the Conv, ConvTranspose, Gemm and MatMul nodes, from static shapes.

    Everything else (pooling, activations, resize) is not counted, as is usual.
    """
    m = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in m.graph.initializer}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes.setdefault(vi.name, tuple(d.dim_value for d in dims))

    def shape(name: str, node: onnx.NodeProto) -> tuple[int, ...]:
        s = shapes.get(name)
        if not s or 0 in s:
            raise ValueError(f"macs: no static shape for {name!r} ({node.op_type} {node.name!r})")
        return s

    total = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = shape(node.input[1], node)
            total += int(np.prod(shape(node.output[0], node))) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":  # every input pixel scatters a full kernel
            w = shape(node.input[1], node)
            total += int(np.prod(shape(node.input[0], node))) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            a = shape(node.input[0], node)
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            total += int(np.prod(shape(node.output[0], node))) * a[0 if trans_a else 1]
        elif node.op_type == "MatMul":
            total += int(np.prod(shape(node.output[0], node))) * shape(node.input[0], node)[-1]
    return total
