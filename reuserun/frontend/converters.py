"""One small function per ONNX op: NodeProto (+ Ctx) -> IR nodes, following the ir.py contract.

A converter raises `Unsupported(reason)` for an attribute value reuserun cannot run; the loader
collects those with the unsupported op types into one UnsupportedOpsError. Converters never see
ops that were constant-folded, and every non-constant tensor they see has a static shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import ir


class Unsupported(Exception):
    """This node cannot run in reuserun; the message says why (shown next to the node name)."""


def attr_dict(node: onnx.NodeProto) -> dict:
    """Attributes as plain values: str for strings, lists for repeated, arrays for tensors."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


@dataclass
class Ctx:
    """What a converter may know about its node: attributes, shapes, constant inputs, opset."""
    node: onnx.NodeProto
    opset: int
    attrs: dict
    in_shapes: list  # per input: tuple, or None where the input is absent ("")
    out_shapes: list
    consts: dict  # every constant in the model, name -> array (read-only)
    used: set  # tensor names read by some node or graph output
    taken: set  # tensor names in use; new names avoid them
    new_consts: dict = field(default_factory=dict)  # name -> array, made by add_const
    new_shapes: dict = field(default_factory=dict)  # name -> shape, made by tmp
    _count: int = 0

    @property
    def name(self) -> str:
        return self.node.name

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def inp(self, i: int) -> str:
        return self.node.input[i]

    def shape(self, i: int = 0) -> tuple:
        return self.in_shapes[i]

    def out_shape(self, i: int = 0) -> tuple:
        return self.out_shapes[i]

    def const(self, i: int):
        """The constant value of input i; None when the input is absent or not constant."""
        return self.consts.get(self.node.input[i]) if self.has(i) else None

    def need_const(self, i: int, what: str) -> np.ndarray:
        v = self.const(i)
        if v is None:
            raise Unsupported(f"{what} (input {i}) must be a constant")
        return v

    def output_used(self, i: int) -> bool:
        return i < len(self.node.output) and self.node.output[i] in self.used

    def _fresh(self, suffix: str) -> str:
        name, k = f"{self.name}/{suffix}", 1
        while name in self.taken:
            name, k = f"{self.name}/{suffix}{k}", k + 1
        self.taken.add(name)
        return name

    def add_const(self, suffix: str, value: np.ndarray) -> str:
        name = self._fresh(suffix)
        self.new_consts[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def tmp(self, suffix: str, shape: tuple) -> str:
        name = self._fresh(suffix)
        self.new_shapes[name] = tuple(shape)
        return name

    def make(self, op: str, inputs: list, outputs: list, **attrs) -> ir.Node:
        # The first IR node keeps the ONNX node's name so messages point at the model.
        name = self.name if self._count == 0 else f"{self.name}/{op}{self._count}"
        self._count += 1
        return ir.Node(op, name, list(inputs), list(outputs), attrs, onnx_op=self.node.op_type)


# ---- shared helpers -------------------------------------------------------------------------

def _axis(axis: int, rank: int, ctx: Ctx) -> int:
    if not -rank <= axis < rank:
        raise ir.ModelError(f"node {ctx.name} ({ctx.node.op_type}): axis {axis} out of range "
                            f"for rank {rank}")
    return axis % rank


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _scalar(v) -> float:
    return float(np.asarray(v).reshape(-1)[0])


def _spatial(ctx: Ctx, what: str) -> int:
    """Number of spatial dims of input 0; reuserun runs 1-D and 2-D only."""
    rank = len(ctx.shape(0))
    if rank not in (3, 4):
        raise Unsupported(f"{what} on a rank-{rank} tensor (only 1-D and 2-D spatial)")
    return rank - 2


def _to_2d(vals: list, fill) -> tuple:
    """1-D attrs as 2-D with a unit leading axis (kh == 1)."""
    return tuple([fill] * (2 - len(vals)) + list(vals))


def _pads_2d(begins: list, ends: list) -> tuple:
    b, e = _to_2d(begins, 0), _to_2d(ends, 0)
    return (b[0], b[1], e[0], e[1])


def _resolve_pads(attrs: dict, in_sp, kernel, strides, dilations) -> tuple[list, list]:
    """Begin/end pads of a conv or pool, auto_pad resolved the way the ONNX spec says."""
    n = len(in_sp)
    for name, values in (("kernel", kernel), ("strides", strides), ("dilations", dilations)):
        if len(values) != n or any(v < 1 for v in values):
            raise ValueError(f"{name} {list(values)} must be {n} values >= 1")
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(attrs.get("pads", [0] * (2 * n)))
        if len(pads) != 2 * n or any(p < 0 for p in pads):
            raise ValueError(f"pads {pads} must be {2 * n} values >= 0")
        return pads[:n], pads[n:]
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={auto_pad!r}")
    begins, ends = [], []
    for i, s, k, d in zip(in_sp, strides, kernel, dilations):
        total = max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins, ends


def _check_positive(out_sp, in_sp) -> None:
    if any(o < 1 for o in out_sp):
        raise ValueError(f"input of spatial size {tuple(in_sp)} is smaller than the kernel's window: "
                         f"the output would be {tuple(out_sp)}")


def _check_out(ctx: Ctx, expected: tuple) -> None:
    if tuple(expected) != tuple(ctx.out_shape(0)):
        raise ir.ModelError(f"node {ctx.name} ({ctx.node.op_type}): computed output shape "
                            f"{tuple(expected)} but shape inference says {ctx.out_shape(0)}")


def _check_weight(w: np.ndarray, group: int) -> None:
    if w.ndim < 3 or w.size == 0:
        raise ValueError(f"weight of shape {w.shape} holds no kernel")
    if group < 1 or w.shape[0] % group:
        raise ValueError(f"group={group} must be >= 1 and divide the weight's {w.shape[0]} filters")


def _bias(ctx: Ctx, i: int):
    if not ctx.has(i):
        return None
    return ctx.need_const(i, "bias").astype(np.float32).reshape(-1)


# ---- convolutions ---------------------------------------------------------------------------

def conv(node, ctx: Ctx):
    n = _spatial(ctx, "Conv")
    x = ctx.shape(0)
    w = ctx.need_const(1, "weight").astype(np.float32)
    kernel = list(w.shape[2:])
    strides = _ints(ctx.attr("strides", [1] * n))
    dil = _ints(ctx.attr("dilations", [1] * n))
    group = int(ctx.attr("group", 1))
    _check_weight(w, group)
    if x[1] != w.shape[1] * group:
        raise ir.ModelError(f"node {ctx.name} (Conv): input has {x[1]} channels, weight "
                            f"{w.shape} with group={group} wants {w.shape[1] * group}")
    begins, ends = _resolve_pads(ctx.attrs, x[2:], kernel, strides, dil)
    out_sp = [(i + b + e - (k - 1) * d - 1) // s + 1
              for i, b, e, k, d, s in zip(x[2:], begins, ends, kernel, dil, strides)]
    _check_positive(out_sp, x[2:])
    _check_out(ctx, (x[0], w.shape[0], *out_sp))
    if n == 1:
        w = w[:, :, None, :]
    return [ctx.make("conv", [node.input[0]], [node.output[0]], weight=np.ascontiguousarray(w),
                     bias=_bias(ctx, 2), strides=_to_2d(strides, 1), pads=_pads_2d(begins, ends),
                     dilations=_to_2d(dil, 1), group=group)]


def conv_transpose(node, ctx: Ctx):
    n = _spatial(ctx, "ConvTranspose")
    x = ctx.shape(0)
    w = ctx.need_const(1, "weight").astype(np.float32)
    kernel = list(w.shape[2:])
    strides = _ints(ctx.attr("strides", [1] * n))
    dil = _ints(ctx.attr("dilations", [1] * n))
    group = int(ctx.attr("group", 1))
    _check_weight(w, group)
    out_pad = _ints(ctx.attr("output_padding", [0] * n))
    if x[1] != w.shape[0]:
        raise ir.ModelError(f"node {ctx.name} (ConvTranspose): input has {x[1]} channels, "
                            f"weight {w.shape} wants {w.shape[0]}")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    full = [s * (i - 1) + op + (k - 1) * d + 1
            for i, s, op, k, d in zip(x[2:], strides, out_pad, kernel, dil)]
    if "output_shape" in ctx.attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # Spec: total padding from the wanted size; SAME_UPPER puts the odd one at the end.
        want = (_ints(ctx.attr("output_shape"))[-n:] if "output_shape" in ctx.attrs
                else [i * s for i, s in zip(x[2:], strides)])
        total = [max(f - o, 0) for f, o in zip(full, want)]
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        ends = [t - b for t, b in zip(total, begins)]
        out_sp = want
    elif auto_pad in ("NOTSET", "VALID"):
        pads = _ints(ctx.attr("pads", [0] * (2 * n))) if auto_pad == "NOTSET" else [0] * (2 * n)
        begins, ends = pads[:n], pads[n:]
        out_sp = [f - b - e for f, b, e in zip(full, begins, ends)]
    else:
        raise Unsupported(f"auto_pad={auto_pad!r}")
    _check_out(ctx, (x[0], w.shape[1] * group, *out_sp))
    if n == 1:
        w = w[:, :, None, :]
    return [ctx.make("conv_transpose", [node.input[0]], [node.output[0]],
                     weight=np.ascontiguousarray(w), bias=_bias(ctx, 2),
                     strides=_to_2d(strides, 1), pads=_pads_2d(begins, ends),
                     dilations=_to_2d(dil, 1), group=group, out_shape=tuple(ctx.out_shape(0)))]


# ---- pooling --------------------------------------------------------------------------------

def pool_geometry(attrs: dict, in_sp) -> tuple:
    """kernel, strides, dilations, pad begins, pad ends and output size of a MaxPool/AveragePool.

    With ceil_mode, a last window that would start in the end padding is dropped, as
    onnxruntime (and PyTorch) do; onnx's shape inference keeps it (the loader corrects that).
    """
    n = len(in_sp)
    kernel = _ints(attrs["kernel_shape"])
    strides = _ints(attrs.get("strides", [1] * n))
    dil = _ints(attrs.get("dilations", [1] * n))
    begins, ends = _resolve_pads(attrs, in_sp, kernel, strides, dil)
    out = []
    for i, b, e, k, d, s in zip(in_sp, begins, ends, kernel, dil, strides):
        span = i + b + e - (k - 1) * d - 1
        if attrs.get("ceil_mode", 0):
            o = -(-span // s) + 1
            out.append(o - 1 if (o - 1) * s >= i + b else o)
        else:
            out.append(span // s + 1)
    _check_positive(out, in_sp)
    return kernel, strides, dil, begins, ends, out


def _pool_common(ctx: Ctx, what: str):
    _spatial(ctx, what)
    x = ctx.shape(0)
    kernel, strides, dil, begins, ends, out_sp = pool_geometry(ctx.attrs, x[2:])
    _check_out(ctx, (*x[:2], *out_sp))
    # ceil_mode lives in the output shape only (ir.py); kernels clip windows at the input edge.
    return dict(kernel=_to_2d(kernel, 1), strides=_to_2d(strides, 1),
                pads=_pads_2d(begins, ends), dilations=_to_2d(dil, 1),
                out_shape=tuple(ctx.out_shape(0)))


def max_pool(node, ctx: Ctx):
    if ctx.output_used(1):
        raise Unsupported("Indices output")
    if ctx.attr("storage_order", 0) != 0:
        raise Unsupported("storage_order=1")
    attrs = _pool_common(ctx, "MaxPool")
    return [ctx.make("maxpool", [node.input[0]], [node.output[0]], **attrs)]


def average_pool(node, ctx: Ctx):
    attrs = _pool_common(ctx, "AveragePool")
    if attrs.pop("dilations") != (1, 1):
        raise Unsupported("dilations != 1")
    return [ctx.make("avgpool", [node.input[0]], [node.output[0]],
                     count_include_pad=bool(ctx.attr("count_include_pad", 0)), **attrs)]


def _global_pool(op: str):
    def convert(node, ctx: Ctx):
        _spatial(ctx, node.op_type)
        return [ctx.make(op, [node.input[0]], [node.output[0]])]
    return convert


def _spatial_reduce(op: str):
    """ReduceMean / ReduceMax over exactly the spatial axes (PyTorch's x.mean((2, 3)), as in
    squeeze-excite blocks) is a global pool; keepdims=0 reshapes its (N, C, 1[, 1]) away."""
    def convert(node, ctx: Ctx):
        rank = len(ctx.shape(0))
        axes = ctx.attr("axes") if ctx.opset < 18 else ctx.const(1)
        if ctx.opset >= 18 and ctx.has(1) and axes is None:
            raise Unsupported("axes (input 1) must be a constant")
        if axes is None or len(_ints(axes)) == 0:
            if ctx.attr("noop_with_empty_axes", 0):
                return identity(node, ctx)
            raise Unsupported("a reduction with no axes given (only the spatial axes, a global pool, run)")
        axes = sorted(_axis(a, rank, ctx) for a in _ints(axes))
        if rank not in (3, 4) or axes != list(range(2, rank)):
            raise Unsupported(f"a reduction over axes {axes} of a rank-{rank} tensor (only the "
                              f"spatial axes of a 1-D or 2-D tensor, a global pool, run)")
        if ctx.attr("keepdims", 1):
            return [ctx.make(op, [node.input[0]], [node.output[0]])]
        pooled = ctx.tmp("pooled", ctx.shape(0)[:2] + (1,) * (rank - 2))
        return [ctx.make(op, [node.input[0]], [pooled]),
                ctx.make("reshape", [pooled], [node.output[0]], shape=tuple(ctx.out_shape(0)))]
    return convert


# ---- activations ----------------------------------------------------------------------------

def _act(ctx: Ctx, kind: str, alpha: float = 0.0, beta: float = 0.0, **extra):
    node = ctx.node
    return [ctx.make("act", [node.input[0]], [node.output[0]], kind=kind, alpha=float(alpha),
                     beta=float(beta), **extra)]


def relu(node, ctx):
    return _act(ctx, "relu")


def leaky_relu(node, ctx):
    return _act(ctx, "leaky_relu", ctx.attr("alpha", 0.01))


def prelu(node, ctx):
    slope = ctx.need_const(1, "slope").astype(np.float32)
    x = ctx.shape(0)
    try:
        fits = np.broadcast_shapes(slope.shape, x) == tuple(x)
    except ValueError:
        fits = False
    if not fits:
        raise Unsupported(f"slope shape {slope.shape} does not broadcast to {x}")
    # Drop leading unit axes so the usual (1, C, 1, 1) reads as (C, 1, 1).
    while slope.ndim > max(len(x) - 1, 1) and slope.shape[0] == 1:
        slope = slope[0]
    return _act(ctx, "prelu", slope=np.ascontiguousarray(slope))


def clip(node, ctx):
    if ctx.opset < 11:
        lo, hi = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
    else:
        lo = _scalar(ctx.need_const(1, "min")) if ctx.has(1) else -math.inf
        hi = _scalar(ctx.need_const(2, "max")) if ctx.has(2) else math.inf
    return _act(ctx, "clip", lo, hi)


def sigmoid(node, ctx):
    return _act(ctx, "sigmoid")


def hard_sigmoid(node, ctx):
    return _act(ctx, "hard_sigmoid", ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5))


def hard_swish(node, ctx):
    return _act(ctx, "hard_swish", 1.0 / 6.0, 0.5)


def tanh(node, ctx):
    return _act(ctx, "tanh")


def elu(node, ctx):
    return _act(ctx, "elu", ctx.attr("alpha", 1.0))


def softplus(node, ctx):
    return _act(ctx, "softplus")


def mish(node, ctx):
    return _act(ctx, "mish")


def gelu(node, ctx):
    approximate = ctx.attr("approximate", "none")
    if approximate != "none":
        raise Unsupported(f"approximate={approximate!r}")
    return _act(ctx, "gelu")


def _binary(kind: str):
    def convert(node, ctx: Ctx):
        if "axis" in ctx.attrs:  # opset < 7 broadcast with an explicit axis
            raise Unsupported("legacy broadcast 'axis' attribute")
        return [ctx.make("binary", [node.input[0], node.input[1]], [node.output[0]], kind=kind)]
    return convert


def batch_norm(node, ctx: Ctx):
    """A BatchNormalization not folded into a Conv: y = x * s + (beta - mean * s)."""
    if any(ctx.output_used(i) for i in range(1, len(node.output))):
        raise Unsupported("training outputs (mean/var) are used")
    if ctx.attr("training_mode", 0):
        raise Unsupported("training_mode=1")
    if ctx.opset < 9 and ctx.attr("spatial", 1) != 1:
        raise Unsupported("spatial=0")
    scale, shift = bn_scale_shift(ctx.need_const(1, "scale"), ctx.need_const(2, "B"),
                                  ctx.need_const(3, "mean"), ctx.need_const(4, "var"),
                                  ctx.attr("epsilon", 1e-5))
    rank = len(ctx.shape(0))
    if rank < 2:
        raise Unsupported(f"rank-{rank} input")
    bshape = (-1,) + (1,) * (rank - 2)
    s = ctx.add_const("scale", scale.astype(np.float32).reshape(bshape))
    b = ctx.add_const("shift", shift.astype(np.float32).reshape(bshape))
    mid = ctx.tmp("scaled", ctx.shape(0))
    return [ctx.make("binary", [node.input[0], s], [mid], kind="mul"),
            ctx.make("binary", [mid, b], [node.output[0]], kind="add")]


def bn_scale_shift(gamma, beta, mean, var, eps) -> tuple[np.ndarray, np.ndarray]:
    """s = gamma / sqrt(var + eps), t = beta - mean * s, in float64 (callers round once)."""
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    return s, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * s


# ---- resize ---------------------------------------------------------------------------------

COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
               "tf_half_pixel_for_nearest")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize_node(ctx: Ctx, mode: str, coord: str, nearest: str, scales: list):
    x, y = ctx.shape(0), ctx.out_shape(0)
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"mode={mode!r}")
    if coord not in COORD_MODES:
        raise Unsupported(f"coordinate_transformation_mode={coord!r}")
    if mode == "nearest" and nearest not in NEAREST_MODES:
        raise Unsupported(f"nearest_mode={nearest!r}")
    if len(x) not in (3, 4):
        raise Unsupported(f"resize of a rank-{len(x)} tensor")
    # The runtime resizes spatial axes only: N and C must stay as they are.
    if any(s != 1.0 for s in scales[:2]) or tuple(x[:2]) != tuple(y[:2]):
        raise Unsupported(f"{mode} resize of the N or C axis (scales {scales})")
    return [ctx.make("resize", [ctx.node.input[0]], [ctx.node.output[0]], mode=mode,
                     coord_mode=coord, nearest_mode=nearest, scales=tuple(scales),
                     out_shape=tuple(y))]


def _f32_ratio(a: int, b: int) -> float:
    # onnxruntime divides in float32; keep its exact value.
    return float(np.float32(a) / np.float32(b))


def resize(node, ctx: Ctx):
    x = ctx.shape(0)
    rank = len(x)
    mode = ctx.attr("mode", "nearest")
    if ctx.opset < 11:
        scales = [float(s) for s in ctx.need_const(1, "scales").reshape(-1)]
        # Resize-10 is Upsample's 'asymmetric'; its nearest pixel is floor, or ceil when shrinking.
        down, up = any(s < 1 for s in scales), any(s > 1 for s in scales)
        if mode == "nearest" and down and up:
            raise Unsupported("opset-10 nearest resize that both shrinks and grows")
        return _resize_node(ctx, mode, "asymmetric", "ceil" if down else "floor", scales)
    if ctx.attr("antialias", 0):
        raise Unsupported("antialias=1")
    axes = [_axis(a, rank, ctx) for a in _ints(ctx.attr("axes", list(range(rank))))]
    scales_in = ctx.const(2) if ctx.has(2) else None
    sizes_in = ctx.const(3) if ctx.has(3) else None
    if ctx.has(2) and scales_in is None or ctx.has(3) and sizes_in is None:
        raise Unsupported("scales/sizes must be constants")
    if scales_in is not None and scales_in.size == 0:
        scales_in = None
    scales = [1.0] * rank
    if scales_in is not None:
        for a, s in zip(axes, scales_in.reshape(-1)):
            scales[a] = float(np.float32(s))
    elif sizes_in is not None:
        sizes = _ints(sizes_in)
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [_f32_ratio(sz, x[a]) for a, sz in zip(axes, sizes)]
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise Unsupported(f"keep_aspect_ratio_policy={policy!r}")
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(ratios)
        for a, r in zip(axes, ratios):
            scales[a] = r
    else:
        raise ir.ModelError(f"node {ctx.name} (Resize): neither scales nor sizes given")
    return _resize_node(ctx, mode, ctx.attr("coordinate_transformation_mode", "half_pixel"),
                        ctx.attr("nearest_mode", "round_prefer_floor"), scales)


def upsample(node, ctx: Ctx):
    if ctx.opset >= 9 or "scales" not in ctx.attrs:
        scales = [float(s) for s in ctx.need_const(1, "scales").reshape(-1)]
    else:
        scales = [float(s) for s in ctx.attr("scales")]
    return _resize_node(ctx, ctx.attr("mode", "nearest"), "asymmetric", "floor", scales)


# ---- shape and data movement ----------------------------------------------------------------

def concat(node, ctx: Ctx):
    rank = len(ctx.out_shape(0))
    return [ctx.make("concat", [i for i in node.input if i], [node.output[0]],
                     axis=_axis(int(ctx.attr("axis", 1 if ctx.opset < 4 else 0)), rank, ctx))]


def slice_(node, ctx: Ctx):
    x = ctx.shape(0)
    rank = len(x)
    if ctx.opset < 10:
        starts, ends = _ints(ctx.attr("starts")), _ints(ctx.attr("ends"))
        axes = _ints(ctx.attr("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    else:
        starts = _ints(ctx.need_const(1, "starts"))
        ends = _ints(ctx.need_const(2, "ends"))
        axes = _ints(ctx.need_const(3, "axes")) if ctx.has(3) else list(range(len(starts)))
        steps = _ints(ctx.need_const(4, "steps")) if ctx.has(4) else [1] * len(starts)
    norm_starts, norm_ends, norm_steps = [0] * rank, list(x), [1] * rank
    seen = set()
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = _axis(a, rank, ctx)
        if a in seen or st == 0:
            raise ir.ModelError(f"node {ctx.name} (Slice): repeated axis or zero step")
        seen.add(a)
        d = x[a]
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        norm_starts[a], norm_ends[a], norm_steps[a] = s, e, st
    # A negative step that runs through index 0 ends "before 0": Python's None.
    norm_ends = [None if e < 0 else e for e in norm_ends]
    expected = np.empty(x, dtype=np.uint8)[tuple(map(slice, norm_starts, norm_ends, norm_steps))]
    _check_out(ctx, expected.shape)
    return [ctx.make("slice", [node.input[0]], [node.output[0]], starts=tuple(norm_starts),
                     ends=tuple(norm_ends), steps=tuple(norm_steps))]


def split(node, ctx: Ctx):
    x = ctx.shape(0)
    axis = _axis(int(ctx.attr("axis", 0)), len(x), ctx)
    sizes = [s[axis] for s in ctx.out_shapes]
    if sum(sizes) != x[axis]:
        raise ir.ModelError(f"node {ctx.name} (Split): sizes {sizes} do not add up to {x[axis]}")
    return [ctx.make("split", [node.input[0]], list(node.output), axis=axis, sizes=sizes)]


def pad(node, ctx: Ctx):
    x = ctx.shape(0)
    rank = len(x)
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"mode={mode!r}")
    if ctx.opset < 11:
        pads = _ints(ctx.attr("pads", ctx.attr("paddings")))
        value = float(ctx.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = _ints(ctx.need_const(1, "pads"))
        value = _scalar(ctx.need_const(2, "constant_value")) if ctx.has(2) else 0.0
        axes = ([_axis(a, rank, ctx) for a in _ints(ctx.need_const(3, "axes"))]
                if ctx.has(3) else list(range(rank)))
    n = len(axes)
    before, after = [0] * rank, [0] * rank
    for a, b, e in zip(axes, pads[:n], pads[n:]):
        before[a], after[a] = b, e
    nodes, src = [], node.input[0]
    if any(p < 0 for p in before + after):
        # Negative pads crop first, as onnxruntime does; the rest is an ordinary pad.
        starts = [max(-b, 0) for b in before]
        ends = [d - max(-e, 0) for d, e in zip(x, after)]
        cropped = tuple(e - s for s, e in zip(starts, ends))
        src_next = ctx.tmp("crop", cropped)
        nodes.append(ctx.make("slice", [src], [src_next], starts=tuple(starts), ends=tuple(ends),
                              steps=(1,) * rank))
        src, x = src_next, cropped
        before, after = [max(b, 0) for b in before], [max(e, 0) for e in after]
    _check_out(ctx, tuple(d + b + e for d, b, e in zip(x, before, after)))
    if not any(before + after):
        return nodes + [ctx.make("identity", [src], [node.output[0]])]
    return nodes + [ctx.make("pad", [src], [node.output[0]], pads=list(zip(before, after)),
                             mode=mode, value=value)]


def flatten(node, ctx: Ctx):
    rank = len(ctx.shape(0))
    axis = int(ctx.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    return [ctx.make("flatten", [node.input[0]], [node.output[0]], axis=axis)]


def _reshape_to_output(node, ctx: Ctx):
    return [ctx.make("reshape", [node.input[0]], [node.output[0]],
                     shape=tuple(ctx.out_shape(0)))]


def reshape(node, ctx: Ctx):
    x = ctx.shape(0)
    shape = _ints(ctx.attr("shape")) if ctx.opset < 5 else None
    if shape is None and ctx.const(1) is not None:
        shape = _ints(ctx.const(1))
    if shape is not None:
        allowzero = ctx.attr("allowzero", 0)
        shape = [x[i] if v == 0 and not allowzero else v for i, v in enumerate(shape)]
        if -1 in shape:
            known = math.prod(v for v in shape if v != -1)
            shape[shape.index(-1)] = math.prod(x) // known if known else 0
        _check_out(ctx, tuple(shape))
    # Without a constant shape input the inferred (static) output shape says it all.
    return _reshape_to_output(node, ctx)


def squeeze_unsqueeze(node, ctx: Ctx):
    return _reshape_to_output(node, ctx)


def transpose(node, ctx: Ctx):
    rank = len(ctx.shape(0))
    perm = _ints(ctx.attr("perm", list(range(rank))[::-1]))
    return [ctx.make("transpose", [node.input[0]], [node.output[0]], perm=tuple(perm))]


def gemm(node, ctx: Ctx):
    inputs = [node.input[0], node.input[1]] + ([node.input[2]] if ctx.has(2) else [])
    return [ctx.make("gemm", inputs, [node.output[0]], alpha=float(ctx.attr("alpha", 1.0)),
                     beta=float(ctx.attr("beta", 1.0)), trans_a=bool(ctx.attr("transA", 0)),
                     trans_b=bool(ctx.attr("transB", 0)))]


def matmul(node, ctx: Ctx):
    return [ctx.make("matmul", [node.input[0], node.input[1]], [node.output[0]])]


def softmax(node, ctx: Ctx):
    x = ctx.shape(0)
    rank = len(x)
    axis = _axis(int(ctx.attr("axis", 1 if ctx.opset < 13 else -1)), rank, ctx)
    if ctx.opset >= 13 or math.prod(x[axis + 1:]) == 1:
        return [ctx.make("softmax", [node.input[0]], [node.output[0]], axis=axis)]
    # Opset < 13 coerces to 2-D: one softmax over all of x[axis:].
    flat = (math.prod(x[:axis]), math.prod(x[axis:]))
    a, b = ctx.tmp("2d", flat), ctx.tmp("softmax", flat)
    return [ctx.make("reshape", [node.input[0]], [a], shape=flat),
            ctx.make("softmax", [a], [b], axis=1),
            ctx.make("reshape", [b], [node.output[0]], shape=tuple(x))]


def identity(node, ctx: Ctx):
    return [ctx.make("identity", [node.input[0]], [node.output[0]])]


def dropout(node, ctx: Ctx):
    if ctx.output_used(1):
        raise Unsupported("mask output is used")
    if ctx.has(2):
        training = ctx.need_const(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise Unsupported("training_mode=True")
    return identity(node, ctx)


def cast(node, ctx: Ctx):
    to = int(ctx.attr("to"))
    if to != onnx.TensorProto.FLOAT:
        raise Unsupported(f"cast to {onnx.TensorProto.DataType.Name(to)}")
    return identity(node, ctx)


CONVERTERS = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": _global_pool("global_avgpool"),
    "GlobalMaxPool": _global_pool("global_maxpool"),
    "ReduceMean": _spatial_reduce("global_avgpool"),
    "ReduceMax": _spatial_reduce("global_maxpool"),
    "BatchNormalization": batch_norm,
    "Relu": relu,
    "LeakyRelu": leaky_relu,
    "PRelu": prelu,
    "Clip": clip,
    "Sigmoid": sigmoid,
    "HardSigmoid": hard_sigmoid,
    "HardSwish": hard_swish,
    "Tanh": tanh,
    "Elu": elu,
    "Softplus": softplus,
    "Mish": mish,
    "Gelu": gelu,
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Resize": resize,
    "Upsample": upsample,
    "Concat": concat,
    "Slice": slice_,
    "Split": split,
    "Pad": pad,
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze_unsqueeze,
    "Unsqueeze": squeeze_unsqueeze,
    "Transpose": transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "Softmax": softmax,
    "Identity": identity,
    "Dropout": dropout,
    "Cast": cast,
}
