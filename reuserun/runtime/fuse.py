"""Graph rewrites before compiling: activations folded into the op that feeds them.

Fusing changes no arithmetic: the kernel applies the same activation to the same value, so
dense and incremental runs stay bit-identical (and the activation's output is what gets
compared for truncation)."""
from __future__ import annotations

import copy

from reuserun import ir

ACT_CODES = {"relu": 1, "leaky_relu": 2, "clip": 3, "sigmoid": 4, "hard_sigmoid": 5,
             "hard_swish": 6, "tanh": 7, "elu": 8, "silu": 9, "prelu": 10, "softplus": 11, "mish": 12}


def _single_consumer(graph, name, consumers):
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in graph.outputs else None


def _consumers(graph):
    out: dict[str, list[ir.Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def fuse_silu(graph: ir.Graph) -> None:
    """y = x * sigmoid(x) becomes one 'silu' activation (YOLOv5-style SiLU exports)."""
    consumers = _consumers(graph)
    drop = set()
    for sig in graph.nodes:
        if sig.op != "act" or sig.attrs.get("kind") != "sigmoid":
            continue
        mul = _single_consumer(graph, sig.outputs[0], consumers)
        x = sig.inputs[0]
        if mul is None or mul.op != "binary" or mul.attrs.get("kind") != "mul":
            continue
        if sorted(mul.inputs) != sorted([x, sig.outputs[0]]):
            continue
        mul.op, mul.inputs, mul.attrs = "act", [x], {"kind": "silu", "alpha": 0.0, "beta": 0.0}
        drop.add(id(sig))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]


def fuse_mish(graph: ir.Graph) -> None:
    """y = x * tanh(softplus(x)) becomes one 'mish' activation (how exporters before opset 18
    write YOLOv4's Mish)."""
    consumers = _consumers(graph)
    drop = set()
    for sp in graph.nodes:
        if sp.op != "act" or sp.attrs.get("kind") != "softplus":
            continue
        th = _single_consumer(graph, sp.outputs[0], consumers)
        if th is None or th.op != "act" or th.attrs.get("kind") != "tanh":
            continue
        mul = _single_consumer(graph, th.outputs[0], consumers)
        x = sp.inputs[0]
        if mul is None or mul.op != "binary" or mul.attrs.get("kind") != "mul":
            continue
        if sorted(mul.inputs) != sorted([x, th.outputs[0]]):
            continue
        mul.op, mul.inputs, mul.attrs = "act", [x], {"kind": "mish", "alpha": 0.0, "beta": 0.0}
        drop.update((id(sp), id(th)))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]


def fuse_act_epilogues(graph: ir.Graph) -> None:
    """conv -> activation becomes a conv with an activation epilogue; so does a residual add
    (binary) -> activation, the ResNet pattern."""
    consumers = _consumers(graph)
    drop = set()
    for conv in graph.nodes:
        if conv.op not in ("conv", "conv_transpose", "binary") or "act" in conv.attrs:
            continue
        act = _single_consumer(graph, conv.outputs[0], consumers)
        if act is None or act.op != "act" or act.attrs["kind"] not in ACT_CODES:
            continue
        slope = act.attrs.get("slope")
        cout = graph.tensors[conv.outputs[0]].shape[1]
        if slope is not None and (slope.size not in (1, cout) or conv.op == "binary"):
            continue
        conv.attrs = dict(conv.attrs, act=act.attrs)
        conv.outputs = list(act.outputs)
        drop.add(id(act))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]


def fuse(graph: ir.Graph) -> ir.Graph:
    graph = copy.copy(graph)
    graph.nodes = [copy.copy(n) for n in graph.nodes]
    fuse_silu(graph)
    fuse_mish(graph)
    fuse_act_epilogues(graph)
    return graph


def act_params(attrs: dict | None):
    """(code, alpha, beta, slope) for a kernel from an 'act' attrs dict (None: no activation)."""
    if not attrs:
        return 0, 0.0, 0.0, None
    kind = attrs["kind"]
    alpha, beta = float(attrs.get("alpha", 0.0)), float(attrs.get("beta", 0.0))
    slope = attrs.get("slope")
    return ACT_CODES[kind], alpha, beta, slope
