"""The graph optimizer between the front-end and the compiler: an explicit table of rewrites
(REWRITES), run in order, each until it finds nothing more, and the table again until no rule
finds anything (GELU's parts read the channels-last tensor that the layout rule then moves).
The first undo what exporters decompose (runtime/rewrites.py); the last fold activations into
the op that feeds them.

Fusing an activation changes no arithmetic: the kernel applies the same activation to the same
value, so dense and incremental runs stay bit-identical (and the activation's output is what
gets compared for truncation)."""
from __future__ import annotations

import copy

from reuserun import ir
from reuserun.kernels.info import ACT_CODES
from reuserun.runtime import rewrites

# y = x * f(x), f a chain of activations on x, as one activation: (the chain's kinds, the fused kind)
GATED = ((("sigmoid",), "silu"),            # SiLU as YOLOv5-style exports write it
         (("softplus", "tanh"), "mish"))    # YOLOv4's Mish before opset 18


def fuse_gated(graph: ir.Graph) -> bool:
    """Each GATED pattern (its chain's intermediate values used nowhere else) becomes one
    activation node in place of the Mul."""
    consumers = rewrites.consumers(graph)
    drop = set()
    for first in graph.nodes:
        for chain, kind in GATED:
            if first.op != "act" or first.attrs.get("kind") != chain[0]:
                continue
            x, links = first.inputs[0], [first]
            for k in chain[1:]:
                nxt = rewrites.single_consumer(graph, links[-1].outputs[0], consumers)
                if nxt is None or nxt.op != "act" or nxt.attrs.get("kind") != k:
                    break
                links.append(nxt)
            else:
                mul = rewrites.single_consumer(graph, links[-1].outputs[0], consumers)
                if (mul is not None and mul.op == "binary" and mul.attrs.get("kind") == "mul"
                        and sorted(mul.inputs) == sorted([x, links[-1].outputs[0]])):
                    mul.op, mul.inputs, mul.attrs = "act", [x], {"kind": kind, "alpha": 0.0, "beta": 0.0}
                    drop.update(id(n) for n in links)
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return bool(drop)


def fuse_act_epilogues(graph: ir.Graph) -> bool:
    """conv -> activation becomes a conv with an activation epilogue; so do a residual add
    (binary) -> activation, the ResNet pattern, and a classifier's Gemm -> activation."""
    consumers = rewrites.consumers(graph)
    drop = set()
    for node in graph.nodes:
        if node.op not in ("conv", "conv_transpose", "binary", "gemm", "matmul") or "act" in node.attrs:
            continue
        act = rewrites.single_consumer(graph, node.outputs[0], consumers)
        if act is None or act.op != "act" or act.attrs["kind"] not in ACT_CODES:
            continue
        slope = act.attrs.get("slope")
        cout = graph.tensors[node.outputs[0]].shape[1]
        if slope is not None and (slope.size not in (1, cout) or node.op not in ("conv", "conv_transpose")):
            continue
        node.attrs = dict(node.attrs, act=act.attrs)
        node.outputs = list(act.outputs)
        drop.add(id(act))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return bool(drop)


# in order: each rule's pattern is what the rules before it leave
REWRITES = (
    ("channels_last_chains", rewrites.sink_channels_last),
    ("gelu", rewrites.gelu),
    ("fold_conv_affine", rewrites.fold_conv_affine),
    ("hard_swish", rewrites.hard_swish),
    ("channel_shuffle", rewrites.channel_shuffle),
    ("shuffle_slices", rewrites.shuffle_slices),
    ("gated_activations", fuse_gated),
    ("activation_epilogues", fuse_act_epilogues),
    ("fold_post_affine", rewrites.fold_post_affine),
)


def fuse(graph: ir.Graph, skip: tuple = ()) -> ir.Graph:
    """The optimized copy of graph (the loader's graph is shared and stays as it is). skip:
    names of rules not to run (tests compare a rule's graph with the graph without it)."""
    graph = copy.copy(graph)
    graph.tensors = dict(graph.tensors)  # rewrites add tensors; the loader's graph keeps its own
    graph.nodes = [copy.copy(n) for n in graph.nodes]
    changed = True
    while changed:  # until no rule finds anything: a later rule's result may be an earlier one's pattern
        changed = False
        for name, rule in REWRITES:
            if name not in skip:
                while rule(graph):
                    changed = True
    # the tensors the rewrites folded away (a conv's output before its affine, a decomposed
    # HardSwish's parts) are no tensors of the optimized graph: nothing allocates or counts them
    used = set(graph.inputs) | set(graph.outputs) | {t for n in graph.nodes for t in (*n.inputs, *n.outputs)}
    graph.tensors = {k: t for k, t in graph.tensors.items() if k in used}
    return graph


def act_params(attrs: dict | None):
    """(code, alpha, beta, slope) for a kernel from an 'act' attrs dict (None: no activation)."""
    if not attrs:
        return 0, 0.0, 0.0, None
    kind = attrs["kind"]
    alpha, beta = float(attrs.get("alpha", 0.0)), float(attrs.get("beta", 0.0))
    slope = attrs.get("slope")
    return ACT_CODES[kind], alpha, beta, slope
