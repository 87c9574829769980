"""A numpy implementation of every IR op, over logical (NCHW / NCL) float32 arrays.

Two uses: the runtime's fallback for ops that mix all positions (flatten, reshape, gemm, softmax,
global pools, ...), and a test oracle for everything else. conv, conv_transpose, pools and resize
here are simple, vectorised and slow; they only run in tests.

Each entry of NUMPY_OPS is fn(node, inputs) -> outputs; inputs may be non-contiguous views,
outputs are C-contiguous float32. act attrs: leaky_relu/elu use alpha; clip clamps to
[alpha, beta]; hard_sigmoid / hard_swish use clip(alpha * x + beta, 0, 1); prelu uses 'slope'.
conv_transpose, maxpool, avgpool and resize also read attr 'out_shape' (the output tensor's
shape, set by the front-end), since output_padding / ceil_mode / sizes are not in their attrs.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import ir
from ..frontend.reference import erf

F32 = np.float32


def _out(y) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=F32)


def _as_2d(x: np.ndarray) -> np.ndarray:
    """(N, C, L) as (N, C, 1, L): 1-D ops run as 2-D with a unit height (ir.py)."""
    return x[:, :, None, :] if x.ndim == 3 else x


def _back(y: np.ndarray, ndim: int) -> np.ndarray:
    return y[:, :, 0, :] if ndim == 3 else y


def _windows(xp: np.ndarray, kernel, strides, dilations, out_hw) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) view of the padded input: one window per output pixel."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    v = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :out_hw[0], :out_hw[1]]


def _pad_hw(x, pads, extra=(0, 0), value=0.0) -> np.ndarray:
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b + extra[0]), (l, r + extra[1])),
                  constant_values=value)


def conv(node: ir.Node, inputs):
    a = node.attrs
    x = _as_2d(inputs[0].astype(F32, copy=False))
    w = a["weight"]
    g = a["group"]
    (kh, kw), (sh, sw), (dh, dw) = w.shape[2:], a["strides"], a["dilations"]
    xp = _pad_hw(x, a["pads"])
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    win = _windows(xp, (kh, kw), (sh, sw), (dh, dw), (oh, ow))
    n, c = x.shape[:2]
    win = win.reshape(n, g, c // g, oh, ow, kh, kw)
    wg = w.reshape(g, w.shape[0] // g, c // g, kh, kw)
    y = np.einsum("ngcxykl,gockl->ngoxy", win, wg, optimize=True).reshape(n, -1, oh, ow)
    if a["bias"] is not None:
        y = y + a["bias"].reshape(1, -1, 1, 1)
    return [_out(_back(y, inputs[0].ndim))]


def conv_transpose(node: ir.Node, inputs):
    a = node.attrs
    x = _as_2d(inputs[0].astype(F32, copy=False))
    w = a["weight"]  # (I, O/g, kh, kw)
    g = a["group"]
    n, ci, h, wd = x.shape
    co_g, kh, kw = w.shape[1:]
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    t, l, _, _ = a["pads"]
    fh, fw = sh * (h - 1) + (kh - 1) * dh + 1, sw * (wd - 1) + (kw - 1) * dw + 1
    full = np.zeros((n, g, co_g, fh, fw), F32)
    xg = x.reshape(n, g, ci // g, h, wd)
    wg = w.reshape(g, ci // g, co_g, kh, kw)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
            full[:, :, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                 j * dw:j * dw + sw * (wd - 1) + 1:sw] += contrib
    full = full.reshape(n, g * co_g, fh, fw)
    out_sp = a["out_shape"][2:]
    oh, ow = (1, *out_sp) if len(out_sp) == 1 else out_sp
    # Output padding (rows past the full result) reads as zeros, then bias.
    y = np.zeros((n, g * co_g, oh, ow), F32)
    part = full[:, :, t:t + oh, l:l + ow]
    y[:, :, :part.shape[2], :part.shape[3]] = part
    if a["bias"] is not None:
        y += a["bias"].reshape(1, -1, 1, 1)
    return [_out(_back(y, inputs[0].ndim))]


def _pool_windows(node, x, value):
    """Windows over x padded with `value`, extended past the end for ceil_mode outputs."""
    a = node.attrs
    out_sp = a["out_shape"][2:]
    oh, ow = (1, *out_sp) if len(out_sp) == 1 else out_sp
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    dh, dw = a.get("dilations", (1, 1))
    t, l, b, r = a["pads"]
    need_h = (oh - 1) * sh + (kh - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw - 1) * dw + 1
    extra = (max(need_h - (x.shape[2] + t + b), 0), max(need_w - (x.shape[3] + l + r), 0))
    xp = _pad_hw(x, a["pads"], extra, value)
    return _windows(xp, (kh, kw), (sh, sw), (dh, dw), (oh, ow)), extra


def maxpool(node: ir.Node, inputs):
    x = _as_2d(inputs[0].astype(F32, copy=False))
    win, _ = _pool_windows(node, x, -np.inf)
    return [_out(_back(win.max(axis=(4, 5)), inputs[0].ndim))]


def avgpool(node: ir.Node, inputs):
    x = _as_2d(inputs[0].astype(F32, copy=False))
    win, extra = _pool_windows(node, x, 0.0)
    total = win.sum(axis=(4, 5), dtype=F32)
    # Divisor: window cells inside the input, or inside input + pads for count_include_pad;
    # cells past the pads (ceil_mode) never count.
    ones = np.ones((1, 1) + x.shape[2:], F32)
    t, l, b, r = node.attrs["pads"]
    if node.attrs["count_include_pad"]:
        ones = np.pad(ones, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=1.0)
        mask = np.pad(ones, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    else:
        mask = _pad_hw(ones, (t, l, b, r), extra)
    count = _windows(mask, node.attrs["kernel"], node.attrs["strides"], (1, 1),
                     total.shape[2:]).sum(axis=(4, 5))
    return [_out(_back(total / count, inputs[0].ndim))]


def global_avgpool(node, inputs):
    x = inputs[0]
    return [_out(x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=F32))]


def global_maxpool(node, inputs):
    x = inputs[0]
    return [_out(x.max(axis=tuple(range(2, x.ndim)), keepdims=True))]


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return F32(1) / (F32(1) + np.exp(-x))


def _softplus(x):
    return np.maximum(x, F32(0)) + np.log1p(np.exp(-np.abs(x)))


def act(node: ir.Node, inputs):
    x = inputs[0].astype(F32, copy=False)
    a = node.attrs
    kind, alpha, beta = a["kind"], F32(a.get("alpha", 0.0)), F32(a.get("beta", 0.0))
    if kind == "relu":
        y = np.maximum(x, F32(0))
    elif kind == "leaky_relu":
        y = np.where(x >= 0, x, alpha * x)
    elif kind == "prelu":
        y = np.where(x >= 0, x, a["slope"] * x)
    elif kind == "clip":
        y = np.minimum(np.maximum(x, alpha), beta)
    elif kind == "sigmoid":
        y = _sigmoid(x)
    elif kind == "hard_sigmoid":
        y = np.clip(alpha * x + beta, F32(0), F32(1))
    elif kind == "hard_swish":
        y = x * np.clip(alpha * x + beta, F32(0), F32(1))
    elif kind == "tanh":
        y = np.tanh(x)
    elif kind == "elu":
        y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, F32(0))))
    elif kind == "silu":
        y = x * _sigmoid(x)
    elif kind == "softplus":
        y = _softplus(x)
    elif kind == "mish":
        y = x * np.tanh(_softplus(x))
    elif kind == "gelu":
        y = F32(0.5) * x * (F32(1) + erf(x * F32(0.70710678118654752)))
    else:
        raise ValueError(f"node {node.name}: unknown act kind {kind!r}")
    return [_out(y)]


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


def binary(node: ir.Node, inputs):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return [_out(_BINARY[node.attrs["kind"]](inputs[0], inputs[1], dtype=F32))]


def _source_coords(mode, out_len, in_len, scale):
    """Source coordinate of every output index along one axis, in float32 like onnxruntime."""
    x = np.arange(out_len, dtype=F32)
    s = F32(scale)
    half = F32(0.5)
    if mode == "half_pixel":
        return (x + half) / s - half
    if mode == "pytorch_half_pixel":
        return (x + half) / s - half if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        if out_len == 1:
            return np.zeros_like(x)
        return x * F32(in_len - 1) / F32(out_len - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nearest":
        return (x + half) / s
    raise ValueError(f"unknown coord_mode {mode!r}")


def _nearest_index(c, mode, in_len):
    if mode == "round_prefer_floor":
        i = np.where(c == np.floor(c) + F32(0.5), np.floor(c), np.round(c))
    elif mode == "round_prefer_ceil":
        i = np.where(c == np.floor(c) + F32(0.5), np.ceil(c), np.round(c))
    elif mode == "floor":
        i = np.floor(c)
    elif mode == "ceil":
        i = np.ceil(c)
    else:
        raise ValueError(f"unknown nearest_mode {mode!r}")
    return np.clip(i.astype(np.int64), 0, in_len - 1)


def resize(node: ir.Node, inputs):
    a = node.attrs
    y = inputs[0].astype(F32, copy=False)
    for axis, (n_in, n_out, s) in enumerate(zip(y.shape, a["out_shape"], a["scales"])):
        if n_in == n_out and s == 1.0:
            continue
        c = _source_coords(a["coord_mode"], n_out, n_in, s)
        if a["mode"] == "nearest":
            y = np.take(y, _nearest_index(c, a["nearest_mode"], n_in), axis=axis)
            continue
        c = np.clip(c, F32(0), F32(n_in - 1))
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        shape = [1] * y.ndim
        shape[axis] = n_out
        w1 = (c - i0.astype(F32)).reshape(shape)
        y = np.take(y, i0, axis=axis) * (F32(1) - w1) + np.take(y, i1, axis=axis) * w1
    return [_out(y)]


def concat(node, inputs):
    return [_out(np.concatenate(inputs, axis=node.attrs["axis"]))]


def slice_(node, inputs):
    a = node.attrs
    return [_out(inputs[0][tuple(map(slice, a["starts"], a["ends"], a["steps"]))])]


def split(node, inputs):
    cuts = np.cumsum(node.attrs["sizes"])[:-1]
    return [_out(p) for p in np.split(inputs[0], cuts, axis=node.attrs["axis"])]


def pad(node, inputs):
    a = node.attrs
    if a["mode"] == "constant":
        return [_out(np.pad(inputs[0], a["pads"], constant_values=a["value"]))]
    return [_out(np.pad(inputs[0], a["pads"], mode=a["mode"]))]


def flatten(node, inputs):
    x, axis = inputs[0], node.attrs["axis"]
    return [_out(x.reshape(int(np.prod(x.shape[:axis])), -1))]


def reshape(node, inputs):
    return [_out(inputs[0].reshape(node.attrs["shape"]))]


def transpose(node, inputs):
    return [_out(inputs[0].transpose(node.attrs["perm"]))]


def gemm(node, inputs):
    a = node.attrs
    A, B = inputs[0], inputs[1]
    A = A.T if a["trans_a"] else A
    B = B.T if a["trans_b"] else B
    # copy=False: weights are float32 already; a transposed view goes to BLAS as is
    y = A.astype(F32, copy=False) @ B.astype(F32, copy=False)
    if a["alpha"] != 1.0:
        y = F32(a["alpha"]) * y
    if len(inputs) > 2:
        c = inputs[2].astype(F32, copy=False)
        y = y + (c if a["beta"] == 1.0 else F32(a["beta"]) * c)
    return [_out(y)]


def matmul(node, inputs):
    return [_out(np.matmul(inputs[0].astype(F32, copy=False), inputs[1].astype(F32, copy=False)))]


def softmax(node, inputs):
    x, axis = inputs[0].astype(F32, copy=False), node.attrs["axis"]
    if x.shape[axis] <= 16 and x.size > 4096:
        # a few classes per position (a detector's per-pixel scores): numpy reduces along a short
        # strided axis slowly (1.15 ms for 139x187x2), slice by slice it is 0.15 ms
        e = np.exp(x - np.expand_dims(_fold_slices(np.maximum, x, axis), axis))
        e /= np.expand_dims(_fold_slices(np.add, e, axis), axis)
    else:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)  # in place: e is a fresh float32 array
    return [_out(e)]


def _fold_slices(ufunc, x, axis):
    """ufunc over the slices of x along axis, in order (max or sum over a short axis)."""
    slices = np.moveaxis(x, axis, 0)
    out = slices[0].copy()
    for s in slices[1:]:
        ufunc(out, s, out=out)
    return out


def identity(node, inputs):
    return [_out(inputs[0])]


def onnx_op(node, inputs):
    return node.attrs["run"](inputs)


def channel_norm(node, inputs):
    x = inputs[0].astype(F32, copy=False)
    a = node.attrs
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=1, keepdims=True, dtype=F32)
    d = x - mean
    var = (d * d).mean(axis=1, keepdims=True, dtype=F32)
    y = d / np.sqrt(var + F32(a["epsilon"])) * a["scale"].reshape(shape) + a["bias"].reshape(shape)
    return [_out(y)]


def channel_shuffle(node, inputs):
    return [_out(inputs[0][:, node.attrs["index"]])]


NUMPY_OPS = {
    "channel_shuffle": channel_shuffle,
    "channel_norm": channel_norm,
    "onnx_op": onnx_op,
    "conv": conv,
    "conv_transpose": conv_transpose,
    "maxpool": maxpool,
    "avgpool": avgpool,
    "global_avgpool": global_avgpool,
    "global_maxpool": global_maxpool,
    "act": act,
    "binary": binary,
    "resize": resize,
    "concat": concat,
    "slice": slice_,
    "split": split,
    "pad": pad,
    "flatten": flatten,
    "reshape": reshape,
    "transpose": transpose,
    "gemm": gemm,
    "matmul": matmul,
    "softmax": softmax,
    "identity": identity,
}
assert set(NUMPY_OPS) == set(ir.OPS), set(ir.OPS) ^ set(NUMPY_OPS)


def run_graph(graph: ir.Graph, feeds: dict) -> dict[str, np.ndarray]:
    """Interpret a whole graph with NUMPY_OPS; returns every graph output by name."""
    env = {name: t.value for name, t in graph.tensors.items() if t.is_const}
    for name in graph.inputs:
        if name not in feeds:
            raise ValueError(f"missing input {name!r}")
        x = np.asarray(feeds[name], dtype=F32)
        want = graph.tensors[name].shape
        if x.shape != tuple(want):
            raise ValueError(f"input {name!r} has shape {x.shape}, the graph wants {want}")
        env[name] = x
    for node in graph.nodes:
        outs = NUMPY_OPS[node.op](node, [env[i] for i in node.inputs])
        env.update(zip(node.outputs, outs))
    return {name: env[name] for name in graph.outputs}
