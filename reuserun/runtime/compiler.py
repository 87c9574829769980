"""Compile an IR graph into a session's program: storage per tensor, one kernel step per node.

BUILDERS holds one builder per IR op. A builder binds kernels to the session's buffers
(weights come packed once per model and are shared by its sessions) or, where the kernels
don't cover a case, falls back to numpy on the whole tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reuserun import ir
from reuserun.info import node_macs
from reuserun.kernels import conv as kconv
from reuserun.kernels import eltwise as kel
from reuserun.plan import geometry as geo
from reuserun.plan.rules import SAME, rule_for, spatial_hw
from reuserun.runtime import rewrites
from reuserun.runtime.fuse import act_params
from reuserun.runtime.steps import (
    ConcatStep,
    FallbackStep,
    GemvStep,
    KernelStep,
    SpatialGemmStep,
    StackConvStep,
    ToSpatialStep,
)
from reuserun.runtime.storage import Const, Plain, Spatial, aligned_zeros


def is_spatial_shape(shape) -> bool:
    return len(shape) in (3, 4) and shape[0] == 1 and all(d > 0 for d in shape)


def frame_stack_inputs(graph: ir.Graph, declared: bool | None, metadata: dict) -> frozenset:
    """Graph inputs to treat as frame stacks: 4-D inputs of 2+ channels read only by one ungrouped
    conv, when declared (frame_stack=True) or when the model says so in its metadata
    ("reuserun.frame_stack"). Not guessed from the shape: on small nets (DQN at 84x84) the
    per-channel bookkeeping costs more time than the partials save."""
    said = declared if declared is not None else \
        metadata.get("reuserun.frame_stack", "").lower() in ("1", "true", "yes")
    if not said:
        return frozenset()
    out = set()
    for name in graph.inputs:
        shape = graph.tensors[name].shape
        users = [n for n in graph.nodes if name in n.inputs]
        if len(shape) != 4 or shape[0] != 1 or shape[1] < 2 or len(users) != 1:
            continue
        if users[0].op == "conv" and users[0].attrs["group"] == 1 and name not in graph.outputs:
            out.add(name)
    return frozenset(out)


class Compiler:
    def __init__(self, graph: ir.Graph, packed: dict, stacks: frozenset = frozenset(), slack: float = 0.0,
                 reuse: bool = False, residuals: bool = True):
        """stacks: graph inputs that are frame stacks (their channels change independently);
        slack: spare room behind each computed tensor's buffer, as a fraction of its size, so
        shift reuse slides caches instead of copying them (Spatial.rebase); reuse: a program for
        dense runs only, whose intermediate spatial tensors share buffers once dead (it keeps no
        cache, and touches a fraction of the memory a cached program does); residuals: with reuse,
        add a residual in the epilogue of the conv that feeds its Add (off: to measure it)."""
        self.graph = graph
        self.slack = slack
        self.reuse = reuse
        self.residuals = reuse and residuals
        self.free_buffers: list[np.ndarray] = []   # reuse: buffers of dead tensors
        self.release_after: dict[int, list] = {}   # reuse: node index -> buffers free after it
        self.last_reader = _last_readers(graph) if reuse else {}
        self.readers = rewrites.consumers(graph) if reuse else {}
        self.packed_cache = packed  # shared by every session of the model
        self.stacks = stacks
        self.storage: dict[str, object] = {}
        self.steps: list = []
        for name, t in graph.tensors.items():
            if t.is_const:
                self.storage[name] = Const(name, t.value)
        for name in graph.inputs:
            shape = graph.tensors[name].shape
            self.storage[name] = (Spatial(name, shape, slack=self.slack_for(shape)) if is_spatial_shape(shape)
                                  else Plain(name, shape))
        self.aliases = plan_concat_aliases(graph, self.slack_for)

    # --- storage helpers -------------------------------------------------------------------
    def shape(self, name):
        return self.graph.tensors[name].shape

    def slack_for(self, shape) -> int:
        h, w = spatial_hw(shape)
        return math.ceil(h * self.slack) * w if h > 1 else math.ceil(w * self.slack)

    def new_spatial(self, name) -> Spatial:
        shape = self.shape(name)
        s = self.aliases.get(name)
        if s is None and self.reuse and name in self.last_reader:
            n = math.prod(spatial_hw(shape)) * shape[1]
            whole = self._take_buffer(n)
            s = Spatial(name, shape, flat=whole[:n])
            self.release_after.setdefault(self.last_reader[name], []).append(whole)  # all of it, again
        elif s is None:
            s = Spatial(name, shape, slack=self.slack_for(shape))
        self.storage[name] = s
        return s

    def _take_buffer(self, n: int) -> np.ndarray:
        """The smallest free buffer that holds n values, else the largest grown to n (a new
        one of that size: so few buffers serve a program, as its tensors grow and shrink)."""
        if not self.free_buffers:
            return aligned_zeros(n)
        fits = [b for b in self.free_buffers if b.size >= n]
        best = min(fits, key=lambda b: b.size) if fits else max(self.free_buffers, key=lambda b: b.size)
        self.free_buffers = [b for b in self.free_buffers if b is not best]
        return best if best.size >= n else aligned_zeros(n)

    def spatial(self, name) -> Spatial:
        """Storage of `name` as a spatial tensor, converting a plain one (once)."""
        s = self.storage[name]
        if s.kind == "spatial":
            return s
        key = name + "#spatial"
        if key not in self.storage:
            conv = Spatial(key, s.shape)
            conv.load(s.logical())
            self.storage[key] = conv
            if s.kind == "plain":
                # diffed against a reference of its own, so what follows sees only the positions
                # that moved (dense programs never diff: no reference)
                ref = None if self.reuse else Plain(key + "#reference", (conv.C, conv.npix))
                if ref is not None:
                    self.storage[ref.name] = ref
                self.steps.append(ToSpatialStep(s, conv, ref))
        return self.storage[key]

    def can_be_spatial(self, name) -> bool:
        return is_spatial_shape(self.shape(name))

    def packed(self, node, make):
        key = node if isinstance(node, tuple) else node.name
        if key not in self.packed_cache:
            self.packed_cache[key] = make()
        return self.packed_cache[key]

    # --- building ---------------------------------------------------------------------------
    def build(self):
        self.done: set[int] = set()  # nodes a builder already covered (fused into another step)
        for i, node in enumerate(self.graph.nodes):
            if id(node) not in self.done:
                builder = BUILDERS.get(node.op, fallback)
                step = builder(node, self)
                if step is not None:
                    self.steps.append(step)
            # steps run in this order, so a tensor whose last reader is built is dead from here
            self.free_buffers += self.release_after.pop(i, [])
        return self.steps, self.storage


def _last_readers(graph: ir.Graph) -> dict[str, int]:
    """Per computed tensor that may share a buffer once dead: the index of the last node that
    reads it, or through an identity (which shares its input's storage) reads its output. Graph
    outputs and inputs keep their own buffers, and so do tensors an identity passes to one."""
    root = {}
    last = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            r = root.get(t, t)
            last[r] = max(last.get(r, i), i)
        for o in node.outputs:
            last.setdefault(o, i)  # read by nothing: dead once written
        if node.op == "identity":
            root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])
    keep = set(graph.inputs) | {root.get(o, o) for o in graph.outputs} | set(graph.outputs)
    return {t: i for t, i in last.items() if t not in keep and not graph.tensors[t].is_const}


# ops whose kernels can write their output straight into a channel slice of a concat's buffer
WRITES_IN_PLACE = {"conv", "conv_transpose", "maxpool", "avgpool", "act", "binary", "resize", "pad",
                   "slice", "concat", "channel_shuffle"}


def plan_concat_aliases(graph: ir.Graph, slack_for) -> dict[str, Spatial]:
    """Storage for tensors that feed a channel concat: slices of the concat's own buffer, so the
    concat costs no copy. Later concats first, so a concat feeding a concat nests correctly."""
    producers = {o: n for n in graph.nodes for o in n.outputs}
    aliases: dict[str, Spatial] = {}
    for node in reversed(graph.nodes):
        out_shape = graph.tensors[node.outputs[0]].shape
        if node.op != "concat" or node.attrs["axis"] != 1 or not is_spatial_shape(out_shape):
            continue
        if len(set(node.inputs)) != len(node.inputs):
            continue
        if not all(is_spatial_shape(graph.tensors[i].shape) for i in node.inputs):
            continue
        out = aliases.get(node.outputs[0]) or Spatial(node.outputs[0], out_shape, slack=slack_for(out_shape))
        aliases[node.outputs[0]] = out
        off = 0
        for name in node.inputs:
            p = producers.get(name)
            shape = graph.tensors[name].shape
            if p is not None and p.op in WRITES_IN_PLACE and len(p.outputs) == 1 \
                    and name not in aliases and name not in graph.inputs:
                aliases[name] = Spatial(name, shape, within=out, off=out.off + off)
            off += shape[1]
    return aliases


def fallback(node, cx: Compiler):
    inputs = [cx.storage[i] for i in node.inputs]
    outputs = []
    for o in node.outputs:
        outputs.append(Plain(o, cx.shape(o)))
        cx.storage[o] = outputs[-1]
    return FallbackStep(node, inputs, outputs, macs=node_macs(node, cx.graph))


def _all_spatial_inputs(node, cx) -> bool:
    return all(cx.can_be_spatial(i) for i in node.inputs)


def _slope_vector(slope, C):
    if slope is None:
        return None
    s = np.asarray(slope, np.float32).reshape(-1)
    return np.full(C, s[0], np.float32) if s.size == 1 else s


def build_stack_conv(node, cx: Compiler):
    """A conv on a frame stack: one bias-free partial conv per input channel, summed."""
    a = node.attrs
    x, y = cx.storage[node.inputs[0]], cx.new_spatial(node.outputs[0])
    w = a["weight"]
    O, k, kh, kw = w.shape
    code, alpha, beta, _ = act_params(a.get("act"))
    bias = a["bias"] if a.get("bias") is not None else np.zeros(O, np.float32)
    geom = ((kh, kw), tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]))
    partials = np.zeros((k, y.H, y.W, O), np.float32)
    kernels = []
    for s in range(k):
        packed, nocb = cx.packed((node.name, s), lambda s=s: kconv.pack_conv_weights(w[:, s:s + 1], False, 1))
        kernels.append(kconv.ConvKernel(x.buf, x.off + s, partials[s], 0, packed, nocb,
                                        np.zeros(nocb * 16, np.float32), None, *geom, 1, 1, O, 0, 0.0, 0.0))
    total = kconv.StackSumKernel(partials, y.buf, y.off, bias, code, alpha, beta)
    return StackConvStep(node, x, y, kernels, total, rule_for(node, cx.graph), kh * kw * O, partials)


def build_conv(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    act = node.attrs.get("act") or {}
    post = node.attrs.get("post")
    if node.inputs[0] in cx.stacks and node.attrs["group"] == 1 and act.get("slope") is None and post is None:
        return build_stack_conv(node, cx)
    a = node.attrs
    w, g = a["weight"], a["group"]
    O, Ig, kh, kw = w.shape
    depthwise = g > 1 and Ig == 1 and O == g and kh * kw <= 64
    fused = None if depthwise or not kconv.takes_residual(g, O // g, False) else _residual_add(node, cx)
    x = cx.spatial(node.inputs[0])
    y = cx.new_spatial(fused.add.outputs[0] if fused else node.outputs[0])
    bias = a["bias"] if a.get("bias") is not None else np.zeros(O, np.float32)
    code, alpha, beta, slope = act_params(fused.act if fused else a.get("act"))
    slope = _slope_vector(slope, O)
    geom = ((kh, kw), tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]))
    if depthwise:
        packed = cx.packed(node, lambda: kconv.pack_dw_weights(w))
        kernel = kconv.DepthwiseKernel(x.buf, x.off, y.buf, y.off, packed, bias, slope, O, *geom,
                                       code, alpha, beta, post=post)
    else:
        residual = None
        if fused:
            r = cx.storage[fused.other]
            residual = (r.buf, r.off, fused.add.inputs[0] == fused.other, fused.after_act)
            cx.done.add(id(fused.add))
        packed, nocb = cx.packed(node, lambda: kconv.pack_conv_weights(w, False, g))
        kernel = kconv.ConvKernel(
            x.buf, x.off, y.buf, y.off, packed, nocb, kconv.pad_channels(bias, g, O // g, nocb),
            None if slope is None else kconv.pad_channels(slope, g, O // g, nocb), *geom,
            g, Ig, O // g, code, alpha, beta,
            post=None if post is None else tuple(kconv.pad_channels(v, g, O // g, nocb) for v in post),
            residual=residual)
    return KernelStep(node, [x], [y], [(kernel, 0)], rule_for(node, cx.graph), Ig * kh * kw * O)


def _residual_add(conv, cx: Compiler):
    """In a program for dense runs (no caches, so no planning): the Add that alone reads this
    conv's output, when its other operand is a spatial tensor of the same shape computed before
    the conv, the conv has no affine after its activation, and at most one of the two has an
    activation. Returns a ResidualAdd or None. The conv then adds it in its epilogue, before the
    Add's activation or after its own: the same roundings in the same order as the two steps, one
    pass over the tensor fewer (as onnxruntime's fused conv with a sum does)."""
    if not cx.residuals or conv.attrs.get("post") or conv.inputs[0] in cx.stacks:
        return None
    out = conv.outputs[0]
    readers = cx.readers.get(out, [])
    if out in cx.graph.outputs or len(readers) != 1:
        return None
    add = readers[0]
    if (add.op != "binary" or add.attrs.get("kind") != "add" or len(add.inputs) != 2
            or add.inputs[0] == add.inputs[1] or (add.attrs.get("act") or {}).get("slope") is not None
            or (add.attrs.get("act") and conv.attrs.get("act"))):
        return None
    other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
    r = cx.storage.get(other)  # none yet: computed after the conv
    if r is None or r.kind != "spatial" or not cx.shape(other) == cx.shape(add.outputs[0]) == cx.shape(out):
        return None
    after_act = bool(conv.attrs.get("act"))
    return ResidualAdd(add, other, conv.attrs["act"] if after_act else add.attrs.get("act"), after_act)


@dataclass
class ResidualAdd:
    """An Add fused into the conv that feeds it: the Add node, its other operand, the activation
    the fused conv applies (its own, or else the Add's) and whether the residual comes after it."""
    add: ir.Node
    other: str
    act: dict | None
    after_act: bool


def build_conv_transpose(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    a = node.attrs
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    w, g = a["weight"], a["group"]
    I, Og, kh, kw = w.shape
    O = Og * g
    bias = a["bias"] if a.get("bias") is not None else np.zeros(O, np.float32)
    code, alpha, beta, slope = act_params(a.get("act"))
    slope = _slope_vector(slope, O)
    packed, nocb = cx.packed(node, lambda: kconv.pack_conv_weights(w, True, g))
    kernel = kconv.ConvKernel(
        x.buf, x.off, y.buf, y.off, packed, nocb, kconv.pad_channels(bias, g, Og, nocb),
        None if slope is None else kconv.pad_channels(slope, g, Og, nocb),
        (kh, kw), tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]),
        g, I // g, Og, code, alpha, beta, transposed=True)
    macs = (I // g) * kh * kw * O // (a["strides"][0] * a["strides"][1])
    return KernelStep(node, [x], [y], [(kernel, 0)], rule_for(node, cx.graph), macs)


def build_pool(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    a = node.attrs
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    kernel = kel.PoolKernel(x.buf, x.off, y.buf, y.off, x.C, tuple(a["kernel"]), tuple(a["strides"]),
                            tuple(a["pads"]), tuple(a.get("dilations", (1, 1))),
                            node.op == "maxpool", bool(a.get("count_include_pad", False)))
    return KernelStep(node, [x], [y], [(kernel, 0)], rule_for(node, cx.graph))


def build_global_pool(node, cx: Compiler):
    """Global pooling of a spatial tensor: one pooling window over the whole map, into a 1x1
    spatial output (so squeeze-excite convs read it without a layout change)."""
    if not cx.can_be_spatial(node.inputs[0]) or not cx.can_be_spatial(node.outputs[0]):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    kernel = kel.GlobalPoolKernel(x.buf, x.off, y.buf, y.off, x.C, node.op == "global_maxpool")
    return KernelStep(node, [x], [y], [(kernel, 0)], rule_for(node, cx.graph))


def build_act(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    code, alpha, beta, slope = act_params(node.attrs)
    if slope is not None and np.asarray(slope).size not in (1, x.C):
        return fallback(node, cx)
    kernel = kel.ElementwiseKernel(y.buf, y.off, y.C, kel.operand(x.buf, x.off, True, True),
                                   act=code, alpha=alpha, beta=beta, slope=slope)
    return KernelStep(node, [x], [y], [(kernel, 0)], SAME)


def _vector_operand(name, cx, C, rank):
    """A constant or plain operand that broadcasts only along channels, or None."""
    shape = cx.shape(name)
    if len(shape) > rank:
        return None
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if full[0] != 1 or any(d != 1 for d in full[2:]) or full[1] not in (1, C):
        return None
    s = cx.storage[name]
    if s.kind == "spatial":  # e.g. a squeeze-excite scale computed by 1x1 convs on a 1x1 map
        return s, kel.operand(s.buf.reshape(-1), s.off, False, full[1] == C)
    flat = np.ascontiguousarray(s.arr, np.float32).reshape(-1) if s.kind == "const" else s.arr.reshape(-1)
    if s.kind == "plain" and not np.shares_memory(flat, s.arr):
        return None
    return s, kel.operand(flat, 0, False, full[1] == C)


def build_binary(node, cx: Compiler):
    out_shape = cx.shape(node.outputs[0])
    if not is_spatial_shape(out_shape):
        return fallback(node, cx)
    C, (H, W), rank = out_shape[1], spatial_hw(out_shape), len(out_shape)
    inputs, vectors, operands = [], [], []
    for name in node.inputs:
        shape = cx.shape(name)
        s = cx.storage[name]
        if s.kind != "const" and len(shape) == rank and is_spatial_shape(shape) \
                and spatial_hw(shape) == (H, W) and shape[1] in (1, C):
            sp = cx.spatial(name)
            inputs.append(sp)
            operands.append(kel.operand(sp.buf, sp.off, True, sp.C == C))
            continue
        vec = _vector_operand(name, cx, C, rank)
        if vec is None:
            return fallback(node, cx)
        vectors.append(vec[0])
        operands.append(vec[1])
    if not inputs:
        return fallback(node, cx)
    y = cx.new_spatial(node.outputs[0])
    code, alpha, beta, _ = act_params(node.attrs.get("act"))
    kernel = kel.ElementwiseKernel(y.buf, y.off, C, operands[0], operands[1], binop=node.attrs["kind"],
                                   act=code, alpha=alpha, beta=beta)
    return KernelStep(node, inputs, [y], [(kernel, 0)], SAME, vectors=vectors)


def _identity_map(n):
    return np.arange(n, dtype=np.int32)


def build_resize(node, cx: Compiler):
    a = node.attrs
    if not cx.can_be_spatial(node.inputs[0]) or any(s != 1.0 for s in a["scales"][:2]):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    reach = rule_for(node, cx.graph)
    if a["mode"] == "nearest":
        kernel = kel.GatherKernel(x.buf, x.off, y.buf, y.off, x.C, reach.ylo, reach.xlo)
    else:
        sy, sx = (a["scales"][2], a["scales"][3]) if x.rank == 4 else (1.0, a["scales"][2])
        ys = geo.resize_sources(y.H, x.H, sy, "linear", a["coord_mode"])
        xs = geo.resize_sources(y.W, x.W, sx, "linear", a["coord_mode"])
        kernel = kel.LinearResizeKernel(x.buf, x.off, y.buf, y.off, x.C, ys, xs)
    return KernelStep(node, [x], [y], [(kernel, 0)], reach)


def build_concat(node, cx: Compiler):
    if node.attrs["axis"] != 1 or not is_spatial_shape(cx.shape(node.outputs[0])) \
            or not _all_spatial_inputs(node, cx):
        return fallback(node, cx)
    y = cx.new_spatial(node.outputs[0])
    xs, work, off = [], [], 0
    ymap, xmap = _identity_map(y.H), _identity_map(y.W)
    for name in node.inputs:
        x = cx.spatial(name)
        xs.append(x)
        if not (x.buf is y.buf and x.off == y.off + off):  # not already written in place
            work.append((kel.GatherKernel(x.buf, x.off, y.buf, y.off + off, x.C, ymap, xmap), x))
        off += x.C
    return ConcatStep(node, xs, y, work)


def build_split(node, cx: Compiler):
    if node.attrs["axis"] != 1 or not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    x = cx.spatial(node.inputs[0])
    ymap, xmap = _identity_map(x.H), _identity_map(x.W)
    outs, work, off = [], [], 0
    for i, name in enumerate(node.outputs):
        y = cx.new_spatial(name)
        outs.append(y)
        work.append((kel.GatherKernel(x.buf, x.off + off, y.buf, y.off, y.C, ymap, xmap), i))
        off += y.C
    return KernelStep(node, [x], outs, work, SAME)


def build_slice(node, cx: Compiler):
    a = node.attrs
    y_shape = cx.shape(node.outputs[0])
    if not cx.can_be_spatial(node.inputs[0]) or not is_spatial_shape(y_shape) or a["steps"][1] != 1:
        return fallback(node, cx)
    c0 = a["starts"][1] or 0
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    reach = rule_for(node, cx.graph)
    kernel = kel.GatherKernel(x.buf, x.off + c0, y.buf, y.off, y.C, reach.ylo, reach.xlo)
    return KernelStep(node, [x], [y], [(kernel, 0)], reach)


def build_pad(node, cx: Compiler):
    a = node.attrs
    if not cx.can_be_spatial(node.inputs[0]) or any(a["pads"][ax] != (0, 0) for ax in (0, 1)):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    maps = [geo.pad_map(y_len, x_len, a["pads"][ax][0], a["mode"])
            for ax, y_len, x_len in zip(range(2, x.rank), cx.shape(node.outputs[0])[2:], x.shape[2:])]
    if x.rank == 3:
        maps.insert(0, np.zeros(1, np.int32))
    kernel = kel.GatherKernel(x.buf, x.off, y.buf, y.off, x.C, maps[0], maps[1], float(a.get("value", 0.0)))
    return KernelStep(node, [x], [y], [(kernel, 0)], rule_for(node, cx.graph))


def _gemm_operands(gemm, cx: Compiler):
    """(weights (N, K) with alpha folded in, bias (N,) with beta) of a Gemm / MatMul by constant
    weights, or None when the weights or the bias are not constants."""
    a = gemm.attrs if gemm.op == "gemm" else {"alpha": 1.0, "beta": 1.0, "trans_a": 0, "trans_b": 0}
    w = cx.storage.get(gemm.inputs[1])
    if a["trans_a"] or w is None or w.kind != "const" or len(w.shape) != 2:
        return None
    Wt = (w.arr if a["trans_b"] else w.arr.T).astype(np.float32)
    N = Wt.shape[0]
    bias = np.zeros(N, np.float32)
    if len(gemm.inputs) > 2:
        c = cx.storage[gemm.inputs[2]]
        if c.kind != "const" or c.arr.size not in (1, N):
            return None
        bias = np.broadcast_to(np.float32(a["beta"]) * c.arr.astype(np.float32).reshape(-1), (N,)).copy()
    if a["alpha"] != 1.0:
        Wt = np.float32(a["alpha"]) * Wt
    return Wt, bias


def build_gemm(node, cx: Compiler):
    """One input row times constant weights (classifier heads): the conv kernel as a 1x1 conv on
    one pixel. Anything else: numpy."""
    x = cx.storage[node.inputs[0]]
    ops = _gemm_operands(node, cx)
    if ops is None or x.kind != "plain" or len(x.shape) != 2 or x.shape[0] != 1:
        return fallback(node, cx)
    Wt, bias = ops
    N, K = Wt.shape
    packed, nocb = cx.packed(node, lambda: kconv.pack_conv_weights(Wt.reshape(N, K, 1, 1), False, 1))
    out = Plain(node.outputs[0], cx.shape(node.outputs[0]))
    cx.storage[node.outputs[0]] = out
    act, alpha, beta, _ = act_params(node.attrs.get("act"))
    kernel = kconv.ConvKernel(x.arr.reshape(1, 1, K), 0, out.arr.reshape(1, 1, N), 0, packed, nocb,
                              kconv.pad_channels(bias, 1, N, nocb), None, (1, 1), (1, 1), (0, 0, 0, 0),
                              (1, 1), 1, K, N, act, alpha, beta)
    return GemvStep(node, x, out, kernel, K * N)


def build_flatten(node, cx: Compiler):
    """Flatten of a spatial tensor feeding only a Gemm with constant weights: one step with
    per-pixel partial sums, so a frame pays for the pixels that changed."""
    x = cx.storage[node.inputs[0]]
    if x.kind == "plain" and tuple(cx.shape(node.outputs[0])) == tuple(x.shape):
        return build_identity(node, cx)  # already flat (a Gemm's output): nothing to do
    users = [n for n in cx.graph.nodes if node.outputs[0] in n.inputs]
    if x.kind != "spatial" or node.attrs.get("axis", 1) != 1 or len(users) != 1 \
            or node.outputs[0] in cx.graph.outputs:
        return fallback(node, cx)
    gemm = users[0]
    ops = _gemm_operands(gemm, cx) if gemm.op in ("gemm", "matmul") and gemm.inputs[0] == node.outputs[0] else None
    if ops is None:
        return fallback(node, cx)
    Wt, bias = ops
    N = Wt.shape[0]
    packed = cx.packed(gemm, lambda: kconv.pack_spatial_gemm(Wt, x.C, x.H, x.W, blocked=True))
    out = Plain(gemm.outputs[0], cx.shape(gemm.outputs[0]))
    cx.storage[gemm.outputs[0]] = out
    cx.done.add(id(gemm))
    partial = np.zeros(packed.shape[::2], np.float32)
    act, alpha, beta, _ = act_params(gemm.attrs.get("act"))
    kernel = kconv.SpatialGemmKernel(x.buf, x.off, packed, bias, out.arr.reshape(-1), partial, act, alpha, beta,
                                     blocked=True)
    return SpatialGemmStep(gemm, x, out, kernel, x.C * N, partial)


def build_channel_shuffle(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    kernel = kel.GatherKernel(x.buf, x.off, y.buf, y.off, y.C, _identity_map(y.H), _identity_map(y.W),
                              cmap=node.attrs["index"], cmap_from=x.C)
    return KernelStep(node, [x], [y], [(kernel, 0)], SAME)


def build_channel_norm(node, cx: Compiler):
    if not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    a = node.attrs
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    kernel = kel.ChannelNormKernel(x.buf, x.off, y.buf, y.off, y.C, a["scale"], a["bias"], a["epsilon"])
    return KernelStep(node, [x], [y], [(kernel, 0)], SAME)


def build_softmax(node, cx: Compiler):
    """A softmax over the channels of a spatial tensor runs per pixel (incremental); any other
    axis mixes positions: numpy over the whole tensor."""
    if node.attrs["axis"] != 1 or not cx.can_be_spatial(node.inputs[0]):
        return fallback(node, cx)
    x, y = cx.spatial(node.inputs[0]), cx.new_spatial(node.outputs[0])
    kernel = kel.ChannelSoftmaxKernel(x.buf, x.off, y.buf, y.off, y.C)
    return KernelStep(node, [x], [y], [(kernel, 0)], SAME)


def build_identity(node, cx: Compiler):
    cx.storage[node.outputs[0]] = cx.storage[node.inputs[0]]
    return None


BUILDERS = {
    "conv": build_conv,
    "conv_transpose": build_conv_transpose,
    "maxpool": build_pool,
    "avgpool": build_pool,
    "act": build_act,
    "binary": build_binary,
    "resize": build_resize,
    "concat": build_concat,
    "split": build_split,
    "slice": build_slice,
    "pad": build_pad,
    "identity": build_identity,
    "channel_shuffle": build_channel_shuffle,
    "channel_norm": build_channel_norm,
    # these mix every position (a plain tensor): numpy over the whole tensor when an input changed
    "global_avgpool": build_global_pool,
    "global_maxpool": build_global_pool,
    "flatten": build_flatten,
    "reshape": fallback,
    "transpose": fallback,
    "gemm": build_gemm,
    "matmul": build_gemm,
    "softmax": build_softmax,
    "onnx_op": fallback,
}
assert set(BUILDERS) == set(ir.OPS), set(ir.OPS) ^ set(BUILDERS)
