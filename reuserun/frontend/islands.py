"""Nodes reuserun has no kernel for, run by onnxruntime: each connected group of them (joined by
the non-float tensors that only they read, such as Equal's mask for Where) becomes one "onnx_op"
IR node, an embedded onnxruntime session over that subgraph. It is recomputed over whole tensors
when an input changed; everything before it and beside it stays incremental."""
from __future__ import annotations

import threading

import numpy as np
import onnx
from onnx import helper

from .. import ir
from .converters import attr_dict
from .reference import NONDETERMINISTIC

# control flow reads outer-scope tensors the subgraph would have to name; random ops would draw
# anew on every recompute, so a dense and an incremental run would disagree
NOT_IN_ISLANDS = {"If", "Loop", "Scan", "SequenceMap"} | NONDETERMINISTIC


class IslandRunner:
    """Runs an island's subgraph in its own onnxruntime session, made on the first call (one
    intra-op thread: an island is a few ops between reuserun's kernels)."""

    def __init__(self, model: onnx.ModelProto, inputs: list, outputs: list, shapes: list):
        self._bytes = model.SerializeToString()
        self.inputs, self.outputs, self.shapes = inputs, outputs, shapes
        self._session = None
        self._lock = threading.Lock()

    def __call__(self, values: list) -> list[np.ndarray]:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from ..runtime.ort_backend import ort_session
                    self._session = ort_session(self._bytes, 1)
        got = self._session.run(self.outputs, {n: np.ascontiguousarray(v) for n, v in zip(self.inputs, values)})
        return [np.asarray(v, np.float32).reshape(s) for v, s in zip(got, self.shapes)]


def _groups(foreign: list, info: dict) -> list[list]:
    """Foreign nodes joined where one reads another's non-float output (those tensors have no
    place in reuserun's float32 caches); each group in graph order."""
    parent = list(range(len(foreign)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {o: i for i, n in enumerate(foreign) for o in n.output if o}
    for i, n in enumerate(foreign):
        for t in n.input:
            j = producer.get(t)
            if j is not None and info.get(t, (onnx.TensorProto.FLOAT,))[0] != onnx.TensorProto.FLOAT:
                parent[root(i)] = root(j)
    groups: dict = {}
    for i, n in enumerate(foreign):
        groups.setdefault(root(i), []).append(n)
    return list(groups.values())


def island_node(members: list, read_outside: set, consts: dict, info: dict, opset_imports,
                ir_version: int) -> tuple[ir.Node | None, str]:
    """The IR node running members (graph order) through onnxruntime, or (None, why not)."""
    bad = [n for n in members if n.op_type in NOT_IN_ISLANDS
           or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)]
    if bad:
        return None, f"{bad[0].op_type} does not run in a partition (control flow or random numbers)"
    produced = {o for n in members for o in n.output if o}
    inputs = list(dict.fromkeys(t for n in members for t in n.input if t and t not in produced))
    outputs = [o for n in members for o in n.output if o and o in read_outside]
    for t in [*(i for i in inputs if i not in consts), *outputs]:
        elem, shape = info.get(t, (None, None))
        if elem != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(elem) if elem else "untyped"
            return None, f"its {kind} tensor {t!r} would cross into reuserun, which keeps float32 tensors"
        if shape is None:
            return None, f"tensor {t!r} has no static shape"
    if not outputs:
        return None, "no output is used"
    # constants are fed too, as the IR holds them (rewrites read a node's weights); dims are left
    # free, since a layout rewrite may feed an elementwise island a permuted shape
    def declared(t):
        elem = helper.np_dtype_to_tensor_dtype(consts[t].dtype) if t in consts else onnx.TensorProto.FLOAT
        rank = consts[t].ndim if t in consts else len(info[t][1])
        return helper.make_tensor_value_info(t, elem, [f"d{k}" for k in range(rank)])

    graph = helper.make_graph(members, members[0].name, [declared(t) for t in inputs],
                              [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in outputs])
    model = helper.make_model(graph, opset_imports=opset_imports, ir_version=ir_version)
    runner = IslandRunner(model, inputs, outputs, [info[t][1] for t in outputs])
    op_type = "+".join(dict.fromkeys(n.op_type for n in members))
    attrs = {"run": runner, "op_type": op_type, "onnx_attrs": attr_dict(members[0]) if len(members) == 1 else {},
             "onnx_nodes": [n.name for n in members]}
    return ir.Node("onnx_op", members[0].name, inputs, outputs, attrs, onnx_op=op_type), ""


def partition(items: list, read_by: dict, graph_outputs: list, consts: dict, info: dict, opset_imports,
              ir_version: int) -> tuple[list, dict, dict]:
    """items: per ONNX node in graph order, its IR nodes (a list) or the node itself where
    onnxruntime must run it. Returns (IR nodes in order, {op type: [node]} for foreign nodes no
    island can take, {op type: why}). An island sits where its last member was; read_by maps a tensor
    to the ONNX nodes that read it."""
    foreign = [it for it in items if isinstance(it, onnx.NodeProto)]
    if not foreign:
        return [n for it in items for n in it], {}, {}
    missing: dict = {}
    reasons: dict = {}
    placed: dict = {}  # id of an island's last member -> its IR node
    for members in _groups(foreign, info):
        inside = {id(n) for n in members}
        read_outside = {o for n in members for o in n.output if o and (
            o in graph_outputs or any(id(r) not in inside for r in read_by.get(o, ())))}
        node, why = island_node(members, read_outside, consts, info, opset_imports, ir_version)
        if node is None:
            for n in members:
                key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                missing.setdefault(key, []).append(n.name)
                reasons.setdefault(key, why)
        else:
            placed[id(members[-1])] = node
    ordered = []
    for it in items:
        if isinstance(it, onnx.NodeProto):
            if id(it) in placed:
                ordered.append(placed[id(it)])
        else:
            ordered.extend(it)
    ordered, cyclic = _in_dependency_order(ordered)
    for node in cyclic:
        key = node.onnx_op or node.op
        missing.setdefault(key, []).extend(node.attrs.get("onnx_nodes", [node.name]))
        reasons.setdefault(key, "its partition and reuserun's nodes would feed each other")
    return ordered, missing, reasons


def _in_dependency_order(nodes: list) -> tuple[list, list]:
    """nodes reordered so each comes after what it reads (an island moved to its last member's
    place may feed a node that came before it), keeping the given order where it can; and the
    nodes left on a cycle."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    waits = [{producer[t] for t in n.inputs if t in producer and producer[t] != i} for i, n in enumerate(nodes)]
    done, ordered = set(), []
    progress = True
    while progress:
        progress = False
        for i, n in enumerate(nodes):
            if i not in done and waits[i] <= done:
                done.add(i)
                ordered.append(n)
                progress = True
                break  # restart from the front: the given order wins wherever it is possible
    return ordered, [n for i, n in enumerate(nodes) if i not in done]
