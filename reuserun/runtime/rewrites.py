"""Rewrites of what exporters decompose, before the epilogue fusions (runtime/fuse.py).

Each rule finds one pattern in the IR, checks that it may, and replaces it; it reports whether it
changed anything. They change values only by rounding (a scale folded into a weight rounds once
where the model rounded twice), so reuserun's dense and incremental runs, which both run the
rewritten graph, stay bit-identical, and both stay within float tolerance of onnxruntime."""
from __future__ import annotations

import numpy as np

from reuserun import ir


def consumers(graph: ir.Graph) -> dict[str, list[ir.Node]]:
    out: dict[str, list[ir.Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def single_consumer(graph: ir.Graph, name: str, users: dict) -> ir.Node | None:
    """The one node reading `name`, when `name` is no graph output."""
    found = users.get(name, [])
    return found[0] if len(found) == 1 and name not in graph.outputs else None


def const_value(graph: ir.Graph, name: str) -> np.ndarray | None:
    t = graph.tensors.get(name)
    return None if t is None or not t.is_const else t.value


def per_channel(value: np.ndarray, out_shape: tuple) -> np.ndarray | None:
    """value as one float32 per channel of a (1, C, ...) tensor, when broadcasting it against that
    tensor varies it along channels at most; else None."""
    shape, rank, C = tuple(value.shape), len(out_shape), out_shape[1]
    if len(shape) > rank or value.dtype.kind != "f":
        return None
    full = (1,) * (rank - len(shape)) + shape
    if full[0] != 1 or any(d != 1 for d in full[2:]) or full[1] not in (1, C):
        return None
    v = np.asarray(value, np.float32).reshape(-1)
    return np.broadcast_to(v, (C,)).copy()


def _scalar(graph: ir.Graph, name: str) -> float | None:
    v = const_value(graph, name)
    if v is None or v.size != 1 or v.dtype.kind != "f":
        return None
    return float(v.reshape(-1)[0])


# ---- conv -> constant affine ------------------------------------------------------------------

def _constant_affine_after(graph: ir.Graph, conv: ir.Node, users: dict):
    """(the binary node, whether the conv's output is its first operand, the constant per
    channel) when the conv's output is read only by a Mul / Div / Add / Sub with a finite
    constant that varies along channels at most (a Div only by nonzero values, conv / c), and
    the result keeps the conv's shape; else None."""
    op = single_consumer(graph, conv.outputs[0], users)
    if op is None or op.op != "binary" or len(op.inputs) != 2:
        return None
    y = conv.outputs[0]
    out_shape = graph.tensors[y].shape
    if graph.tensors[op.outputs[0]].shape != out_shape:
        return None
    first = op.inputs[0] == y
    value = const_value(graph, op.inputs[1] if first else op.inputs[0])
    v = None if value is None else per_channel(value, out_shape)
    if v is None or not np.all(np.isfinite(v)):
        return None
    if op.attrs["kind"] == "div":
        with np.errstate(divide="ignore", over="ignore"):
            if not first or not np.all(np.isfinite(np.float32(1) / v)):
                return None  # a zero or subnormal divisor would fold to inf
    return op, first, v


def fold_conv_affine(graph: ir.Graph) -> bool:
    """conv -> Mul / Div / Add / Sub by a per-channel or scalar constant (the conv's output read
    by nothing else) becomes the conv with that affine in its weights and bias: Paddle's
    learnable affine blocks, a BatchNormalization exported as Mul and Add, a scale by 1/255."""
    users = consumers(graph)
    changed, drop = False, set()
    for conv in graph.nodes:
        if conv.op not in ("conv", "conv_transpose") or "act" in conv.attrs or id(conv) in drop:
            continue
        if conv.op == "conv_transpose" and conv.attrs["group"] != 1:
            continue
        found = _constant_affine_after(graph, conv, users)
        if found is None:
            continue
        op, first, v = found
        kind = op.attrs["kind"]
        w = conv.attrs["weight"]
        O = v.size
        bias = conv.attrs.get("bias")
        b = np.zeros(O, np.float32) if bias is None else np.asarray(bias, np.float32).copy()
        axis = (slice(None), None, None, None) if conv.op == "conv" else (None, slice(None), None, None)
        if kind in ("mul", "div"):
            s = v if kind == "mul" else (np.float32(1) / v).astype(np.float32)
            w, b = (w * s[axis]).astype(np.float32), (b * s).astype(np.float32)
        elif kind == "add":
            b = (b + v).astype(np.float32)
        elif first:  # conv - c
            b = (b - v).astype(np.float32)
        else:  # c - conv
            w, b = (-w).astype(np.float32), (v - b).astype(np.float32)
        attrs = dict(conv.attrs, weight=np.ascontiguousarray(w), bias=b)
        if "act" in op.attrs:
            attrs["act"] = op.attrs["act"]
        conv.attrs, conv.outputs = attrs, list(op.outputs)
        drop.add(id(op))
        changed = True
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return changed


# ---- decomposed activations ------------------------------------------------------------------

def _is_act(node: ir.Node | None, kind: str) -> bool:
    return node is not None and node.op == "act" and node.attrs.get("kind") == kind


def _is_binary(node: ir.Node | None, kind: str) -> bool:
    return node is not None and node.op == "binary" and node.attrs.get("kind") == kind and "act" not in node.attrs


def _other(node: ir.Node, name: str) -> str | None:
    """The input of a two-input node that is not `name` (None when both are)."""
    a, b = node.inputs
    return b if a == name and b != name else a if b == name and a != name else None


def _gate(graph, x, users):
    """The nodes of clip(x + 3, 0, 6) [/ 6 or * 1/6] or hard_sigmoid(x, 1/6, 1/2) read from x,
    and whether the gate is already divided by 6: [(nodes, gate output, divided)]."""
    found = []
    for first in users.get(x, []):
        if _is_act(first, "hard_sigmoid") and np.isclose(first.attrs["alpha"], 1 / 6) \
                and first.attrs["beta"] == 0.5:
            found.append(([first], first.outputs[0], True))
            continue
        if not (_is_binary(first, "add") and _scalar(graph, _other(first, x) or "") == 3.0):
            continue
        clip = single_consumer(graph, first.outputs[0], users)
        if not (_is_act(clip, "clip") and clip.attrs["alpha"] == 0.0 and clip.attrs["beta"] == 6.0):
            continue
        nodes, gate = [first, clip], clip.outputs[0]
        nxt = single_consumer(graph, gate, users)
        if _is_binary(nxt, "div") and nxt.inputs[0] == gate and _scalar(graph, nxt.inputs[1]) == 6.0:
            found.append((nodes + [nxt], nxt.outputs[0], True))
        else:
            found.append((nodes, gate, False))
    return found


def hard_swish(graph: ir.Graph) -> bool:
    """x * clip(x + 3, 0, 6) / 6 (the last step a Div by 6 or a Mul by 1/6), x * (clip(x + 3, 0,
    6) / 6), and x * HardSigmoid(x, 1/6, 1/2) become one HardSwish."""
    users = consumers(graph)
    drop, changed = set(), False
    for x in list(graph.tensors):
        for nodes, gate, divided in _gate(graph, x, users):
            if any(id(n) in drop for n in nodes):
                continue
            mul = single_consumer(graph, gate, users)
            if not (_is_binary(mul, "mul") and _other(mul, gate) == x):
                continue
            last = mul
            if not divided:
                last = single_consumer(graph, mul.outputs[0], users)
                six = None if last is None or last.op != "binary" or last.inputs[0] != mul.outputs[0] \
                    else _scalar(graph, last.inputs[1])
                if not ((_is_binary(last, "div") and six == 6.0)
                        or (_is_binary(last, "mul") and six is not None and np.isclose(six, 1 / 6))):
                    continue
                nodes = nodes + [mul]
            last.op, last.inputs = "act", [x]
            last.attrs = {"kind": "hard_swish", "alpha": 1 / 6, "beta": 0.5}
            drop.update(id(n) for n in nodes if n is not last)
            changed = True
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return changed


# ---- activation -> constant affine -----------------------------------------------------------

def fold_post_affine(graph: ir.Graph) -> bool:
    """conv with a fused activation -> Mul / Div / Add / Sub by a per-channel or scalar constant
    becomes the conv with a per-channel affine after its activation (attrs["post"] = (scale,
    shift)), computed in the kernel's epilogue: the affine that Paddle's PP-LCNet writes after
    each HardSwish, a BatchNormalization after a ReLU."""
    users = consumers(graph)
    changed, drop = False, set()
    for conv in graph.nodes:
        if conv.op != "conv" or "act" not in conv.attrs or id(conv) in drop:
            continue
        found = _constant_affine_after(graph, conv, users)
        if found is None or "act" in found[0].attrs:
            continue
        op, first, v = found
        kind = op.attrs["kind"]
        O = v.size
        scale, shift = conv.attrs.get("post") or (np.ones(O, np.float32), np.zeros(O, np.float32))
        if kind == "mul":
            scale, shift = scale * v, shift * v
        elif kind == "div":
            scale, shift = scale / v, shift / v
        elif kind == "add":
            shift = shift + v
        elif first:
            shift = shift - v
        else:
            scale, shift = -scale, v - shift
        conv.attrs = dict(conv.attrs, post=(scale.astype(np.float32), shift.astype(np.float32)))
        conv.outputs = list(op.outputs)
        drop.add(id(op))
        changed = True
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return changed


# ---- channel shuffle -------------------------------------------------------------------------

def channel_shuffle(graph: ir.Graph) -> bool:
    """Reshape (1, C, H, W) -> (1, g, C / g, H, W), Transpose (0, 2, 1, 3, 4), Reshape back to
    (1, C, H, W) (ShuffleNet's channel shuffle; the intermediates read by nothing else) becomes
    one channel permutation, a per-pixel copy that stays incremental, where the three ran in
    numpy over the whole tensor."""
    users = consumers(graph)
    drop, changed = set(), False
    for first in graph.nodes:
        if first.op != "reshape" or id(first) in drop:
            continue
        x_shape = graph.tensors[first.inputs[0]].shape
        mid = tuple(first.attrs["shape"])
        if len(x_shape) != 4 or len(mid) != 5 or mid[0] != 1 or mid[3:] != x_shape[2:] \
                or mid[1] * mid[2] != x_shape[1]:
            continue
        t = single_consumer(graph, first.outputs[0], users)
        if t is None or t.op != "transpose" or tuple(t.attrs["perm"]) != (0, 2, 1, 3, 4):
            continue
        last = single_consumer(graph, t.outputs[0], users)
        if last is None or last.op != "reshape" or tuple(last.attrs["shape"]) != tuple(x_shape):
            continue
        g, n = mid[1], mid[2]
        index = np.arange(x_shape[1]).reshape(g, n).T.reshape(-1).astype(np.int32)
        last.op, last.inputs, last.attrs = "channel_shuffle", [first.inputs[0]], {"index": index}
        drop.update((id(first), id(t)))
        changed = True
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return changed
