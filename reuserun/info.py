"""A readable summary of an IR graph: ops, shapes, MACs and receptive fields."""
from __future__ import annotations

from collections import Counter

import numpy as np

from reuserun import ir


def node_macs(node: ir.Node, graph: ir.Graph) -> int:
    y = graph.tensors[node.outputs[0]].shape
    if node.op == "conv":
        _, ig, kh, kw = node.attrs["weight"].shape
        return int(np.prod(y)) * ig * kh * kw
    if node.op == "conv_transpose":
        i, _, kh, kw = node.attrs["weight"].shape
        s = node.attrs["strides"]
        return int(np.prod(y)) * (i // node.attrs["group"]) * kh * kw // (s[0] * s[1])
    if node.op == "gemm":
        a = graph.tensors[node.inputs[0]].shape
        return int(np.prod(y)) * (a[0] if node.attrs.get("trans_a") else a[1])
    if node.op == "matmul":
        return int(np.prod(y)) * graph.tensors[node.inputs[0]].shape[-1]
    return 0


def receptive_fields(graph: ir.Graph) -> dict[str, tuple]:
    """Per tensor: (receptive field, jump) in input pixels along the last axis; None = global."""
    rf: dict[str, tuple | None] = {name: (1, 1) for name in graph.inputs}
    for node in graph.nodes:
        ins = [rf.get(i) for i in node.inputs if not graph.tensors[i].is_const]
        if any(r is None for r in ins) or not ins:
            out = None if ins else (1, 1)
        else:
            size, jump = max(r[0] for r in ins), max(r[1] for r in ins)
            a = node.attrs
            if node.op in ("conv", "maxpool", "avgpool"):
                k = a["weight"].shape[-1] if node.op == "conv" else a["kernel"][-1]
                d = a.get("dilations", (1, 1))[-1]
                out = (size + (k - 1) * d * jump, jump * a["strides"][-1])
            elif node.op == "conv_transpose":
                k = a["weight"].shape[-1]
                out = (size + max(0, (k - 1) * a["dilations"][-1] - 1) * jump // a["strides"][-1] + jump,
                       max(1, jump // a["strides"][-1]))
            elif node.op == "resize":
                s = a["scales"][-1]
                out = (size + jump, max(1, int(round(jump / s))))
            elif node.op in ("act", "binary", "identity", "concat", "split", "slice", "pad", "channel_shuffle",
                             "channel_norm") or (node.op == "softmax" and a["axis"] == 1):
                out = (size, jump)
            else:
                out = None
        for o in node.outputs:
            rf[o] = out
    return rf


def runs_in(node: ir.Node) -> str:
    """Who computes a node: reuserun's kernels, or onnxruntime on the node's own subgraph."""
    if node.op == "onnx_op":
        return f"onnxruntime ({node.attrs['op_type']})"
    return "reuserun"


def describe(graph: ir.Graph) -> str:
    rf = receptive_fields(graph)
    lines = ["inputs: " + ", ".join(f"{n} {graph.tensors[n].shape}" for n in graph.inputs),
             "outputs: " + ", ".join(f"{n} {graph.tensors[n].shape}" for n in graph.outputs),
             "ops: " + ", ".join(f"{op} x{c}" for op, c in Counter(n.op for n in graph.nodes).most_common()),
             "", f"{'node':<40} {'op':<15} {'output shape':<22} {'MACs':>12} {'RF':>6}  runs in"]
    total = 0
    for node in graph.nodes:
        macs = node_macs(node, graph)
        total += macs
        r = rf.get(node.outputs[0])
        lines.append(f"{node.name[:40]:<40} {node.op:<15} {str(graph.tensors[node.outputs[0]].shape):<22} "
                     f"{macs:>12,} {('global' if r is None else r[0]):>6}  {runs_in(node)}")
    lines.append(f"\ntotal MACs: {total:,}")
    foreign = [n for n in graph.nodes if n.op == "onnx_op"]
    if foreign:
        lines.append(f"{len(foreign)} partition(s) run in onnxruntime over whole tensors, when an input "
                     f"changed: " + ", ".join(sorted({n.attrs['op_type'] for n in foreign})))
    return "\n".join(lines)
