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


def channel_slice(node: ir.Node, graph: ir.Graph) -> tuple[int, int] | None:
    """(first, end) channel of a slice that cuts only channels, with step 1, else None."""
    if node.op != "slice":
        return None
    shape = graph.tensors[node.inputs[0]].shape
    a = node.attrs
    if len(a["starts"]) != len(shape) or any(st != 1 for st in a["steps"]):
        return None
    if any((a["starts"][i], a["ends"][i]) != (0, shape[i]) for i in range(len(shape)) if i != 1):
        return None
    return a["starts"][1], a["ends"][1]


def shuffle_slices(graph: ir.Graph) -> bool:
    """A channel permutation read only by channel slices (ShuffleNetV2 splits each shuffle in two
    halves) becomes one channel selection per slice, straight from the permutation's input: each
    half is one copy, where the permutation and then its slices were two."""
    users = consumers(graph)
    drop, changed = set(), False
    for shuffle in graph.nodes:
        if shuffle.op != "channel_shuffle" or shuffle.outputs[0] in graph.outputs:
            continue
        readers = users.get(shuffle.outputs[0], [])
        cuts = [channel_slice(r, graph) for r in readers]
        if not readers or any(c is None for c in cuts):
            continue
        for reader, (first, end) in zip(readers, cuts):
            reader.op, reader.inputs = "channel_shuffle", [shuffle.inputs[0]]
            reader.attrs = {"index": shuffle.attrs["index"][first:end].copy()}
        drop.add(id(shuffle))
        changed = True
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return changed


# ---- channels-last chains --------------------------------------------------------------------

TO_CHANNELS_LAST = (0, 2, 3, 1)
TO_CHANNELS_FIRST = (0, 3, 1, 2)

# one-input ops that act on each element alone: a layout change commutes with them
ELEMENTWISE_ONNX = {"Erf", "Sqrt", "Exp", "Log", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round",
                    "Sign", "Sin", "Cos", "Softsign", "Selu", "Celu", "ThresholdedRelu"}


def _is_channels_last(node: ir.Node | None) -> bool:
    return node is not None and node.op == "transpose" and tuple(node.attrs["perm"]) == TO_CHANNELS_LAST


def _channels_first_const(value: np.ndarray) -> np.ndarray | None:
    """A constant broadcast against an (N, H, W, C) tensor, as the constant that broadcasts the
    same way against (N, C, H, W); None above rank 4."""
    if value.ndim > 4:
        return None
    v = value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(TO_CHANNELS_FIRST)
    return np.ascontiguousarray(v)


def _fresh(graph: ir.Graph, base: str) -> str:
    name, k = base, 1
    while name in graph.tensors:
        name, k = f"{base}{k}", k + 1
    return name


def _rename_input(graph: ir.Graph, old: str, new: str) -> None:
    for n in graph.nodes:
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]


def _channels_first_form(graph: ir.Graph, t: ir.Node, u: ir.Node, users: dict):
    """(op, inputs, attrs, absorbed) of u computed on t's channels-first input, where u reads t's
    channels-last output; None when u does not commute with the layout change. Nothing in the
    graph changes: an input may be a new constant (an array, for the caller to add), absorbed
    lists the other Transposes to channels-last whose output u alone read."""
    x, y = t.inputs[0], t.outputs[0]
    C = graph.tensors[x].shape[1]
    if u.op == "act" and np.asarray(u.attrs.get("slope", 0.0)).size == 1:
        return "act", [x], u.attrs, []
    if u.op == "onnx_op" and u.attrs["op_type"] in ELEMENTWISE_ONNX and u.inputs == [y]:
        shape = graph.tensors[x].shape
        run = u.attrs["run"]  # gives the channels-last shape: the same values in the same order
        return "onnx_op", [x], dict(u.attrs, run=lambda values: [v.reshape(shape) for v in run(values)]), []
    if u.op == "binary":
        inputs, absorbed = [], []
        for name in u.inputs:
            if name == y:
                inputs.append(x)
                continue
            value = const_value(graph, name)
            other = graph.producer(name)
            if value is not None:
                inputs.append(_channels_first_const(value))
                if inputs[-1] is None:
                    return None
            elif _is_channels_last(other) and single_consumer(graph, name, users) is u:
                inputs.append(other.inputs[0])
                absorbed.append(other)
            else:
                return None
        return "binary", inputs, u.attrs, absorbed
    if u.op == "softmax" and u.attrs["axis"] == 3:
        return "softmax", [x], {"axis": 1}, []
    if u.op == "matmul" and u.inputs[0] == y and "act" not in u.attrs:
        w = const_value(graph, u.inputs[1])
        if w is None or w.ndim != 2 or w.shape[0] != C:
            return None
        weight = np.ascontiguousarray(w.T.reshape(w.shape[1], C, 1, 1), np.float32)
        return "conv", [x], {"weight": weight, "bias": None, "strides": (1, 1), "pads": (0, 0, 0, 0),
                             "dilations": (1, 1), "group": 1}, []
    if u.op == "onnx_op" and u.attrs["op_type"] == "LayerNormalization" and len(u.outputs) == 1 \
            and u.inputs[0] == y:
        onnx_attrs = u.attrs.get("onnx_attrs", {})
        scale = const_value(graph, u.inputs[1]) if len(u.inputs) > 1 else None
        bias = const_value(graph, u.inputs[2]) if len(u.inputs) > 2 else np.zeros(C, np.float32)
        if onnx_attrs.get("axis", -1) not in (-1, 3) or scale is None or bias is None \
                or scale.size != C or bias.size != C:
            return None
        return "channel_norm", [x], {"scale": np.asarray(scale, np.float32).reshape(C),
                                     "bias": np.asarray(bias, np.float32).reshape(C),
                                     "epsilon": float(onnx_attrs.get("epsilon", 1e-5))}, []
    return None


def sink_channels_last(graph: ir.Graph) -> bool:
    """Moves a Transpose to channels-last (N, H, W, C) past the per-pixel ops that read it, until
    it meets the Transpose back and both vanish: a MatMul by constant weights over the channels
    becomes a 1x1 conv, a LayerNormalization over them a per-pixel channel norm, a Softmax over
    them a softmax over the channels, elementwise ops take their constants transposed. So
    ConvNeXt's blocks and TF-style channels-last tails run as per-pixel kernels on the runtime's
    own layout rather than in numpy on whole tensors."""
    users = consumers(graph)
    for t in graph.nodes:
        if not _is_channels_last(t) or len(graph.tensors[t.inputs[0]].shape) != 4:
            continue
        u = single_consumer(graph, t.outputs[0], users)
        if u is None or len(u.outputs) != 1:
            continue
        x, out = t.inputs[0], u.outputs[0]
        if u.op == "transpose" and tuple(u.attrs["perm"]) == TO_CHANNELS_FIRST:
            graph.nodes = [n for n in graph.nodes if n is not t and n is not u]
            if out not in graph.outputs:
                _rename_input(graph, out, x)
            elif x in graph.inputs or x in graph.outputs:
                graph.nodes.append(ir.Node("identity", u.name, [x], [out]))
            else:  # the output's name goes to the tensor it equals
                for n in graph.nodes:
                    n.outputs = [out if o == x else o for o in n.outputs]
                _rename_input(graph, x, out)
            return True
        out_shape = graph.tensors[out].shape
        form = _channels_first_form(graph, t, u, users) if len(out_shape) == 4 else None
        if form is None:
            continue
        op, inputs, attrs, absorbed = form
        for k, v in enumerate(inputs):
            if isinstance(v, np.ndarray):  # a constant moved to the channels-first layout
                inputs[k] = _fresh(graph, f"{u.name}/const{k}/nchw")
                graph.tensors[inputs[k]] = ir.Tensor(inputs[k], v.shape, v.dtype, v)
        moved = _fresh(graph, out + "/nchw")
        graph.tensors[moved] = ir.Tensor(moved, tuple(out_shape[i] for i in TO_CHANNELS_FIRST))
        dropped = {id(n) for n in (t, *absorbed)}
        u.op, u.inputs, u.attrs, u.outputs = op, inputs, attrs, [moved]
        after = ir.Node("transpose", t.name, [moved], [out], {"perm": TO_CHANNELS_LAST}, onnx_op="Transpose")
        nodes = []
        for n in graph.nodes:
            if id(n) not in dropped:
                nodes.append(n)
            if n is u:
                nodes.append(after)
        graph.nodes = nodes
        return True
    return False


# ---- GELU -------------------------------------------------------------------------------------

def _scaled_by(graph: ir.Graph, node: ir.Node | None, value: float):
    """x when node computes x * value (or x / (1 / value)) with a scalar constant, else None."""
    if _is_binary(node, "mul"):
        for a, b in (node.inputs, node.inputs[::-1]):
            s = _scalar(graph, b)
            if s is not None and np.isclose(s, value, rtol=1e-6) and const_value(graph, a) is None:
                return a
    if _is_binary(node, "div"):
        s = _scalar(graph, node.inputs[1])
        if s is not None and s != 0 and np.isclose(1 / s, value, rtol=1e-6):
            return node.inputs[0]
    return None


def gelu(graph: ir.Graph) -> bool:
    """x * 0.5 * (1 + erf(x / sqrt(2))), in the orders torch.onnx writes it (the 0.5 applied to x
    first or to the product last), becomes one GELU activation."""
    users = consumers(graph)
    for erf in graph.nodes:
        if erf.op != "onnx_op" or erf.attrs["op_type"] != "Erf":
            continue
        scale = graph.producer(erf.inputs[0])
        x = _scaled_by(graph, scale, 1 / np.sqrt(2))
        add = single_consumer(graph, erf.outputs[0], users)
        if x is None or single_consumer(graph, scale.outputs[0], users) is not erf \
                or not _is_binary(add, "add") or _scalar(graph, _other(add, erf.outputs[0]) or "") != 1.0:
            continue
        mul = single_consumer(graph, add.outputs[0], users)
        if not _is_binary(mul, "mul"):
            continue
        other = _other(mul, add.outputs[0])
        half = graph.producer(other) if other is not None else None
        if other == x:  # (x * (1 + erf)) * 0.5
            last = single_consumer(graph, mul.outputs[0], users)
            if _scaled_by(graph, last, 0.5) != mul.outputs[0]:
                continue
            nodes = [scale, erf, add, mul]
        elif half is not None and _scaled_by(graph, half, 0.5) == x \
                and single_consumer(graph, other, users) is mul:  # (x * 0.5) * (1 + erf)
            last, nodes = mul, [scale, erf, add, half]
        else:
            continue
        last.op, last.inputs, last.attrs = "act", [x], {"kind": "gelu", "alpha": 0.0, "beta": 0.0}
        drop = {id(n) for n in nodes if n is not last}
        graph.nodes = [n for n in graph.nodes if id(n) not in drop]
        return True
    return False
