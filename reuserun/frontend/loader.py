"""ONNX ModelProto -> ir.Graph: parse, bind input dims, fold constants, infer shapes, convert.

Steps: parse and check the model; bind dynamic input dims; fold every node whose inputs are
constants (Shape/Size fold from static inferred shapes), re-running shape inference until nothing
more folds; drop dead nodes; fold BatchNormalization into the Conv before it; convert the rest
with CONVERTERS. Unsupported ops are collected and reported together.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .. import ir
from .converters import CONVERTERS, Ctx, Unsupported, attr_dict, bn_scale_shift, pool_geometry
from .islands import partition
from .reference import NONDETERMINISTIC

_DEFAULT_DOMAINS = ("", "ai.onnx")
# Float constants up to this size go to shape inference by value (Resize scales and the like);
# larger ones (weights) only by type and shape, to keep inference cheap.
_INFER_VALUE_LIMIT = 4096


def load_model(model, input_shapes: dict | None = None, strict: bool = False) -> ir.Graph:
    """Load an ONNX model (path, bytes or ModelProto) into an ir.Graph with static shapes.

    input_shapes binds dynamic input dims: {input_name: (N, C, H, W)}.
    Nodes reuserun has no kernel for run in embedded onnxruntime sessions ("onnx_op" nodes);
    strict refuses them instead.
    Raises ModelError for malformed models, UnsupportedOpsError listing the nodes that cannot run.
    """
    proto = parse_model(model)
    opset = _default_opset(proto)
    if proto.functions:
        from onnx import inliner  # model-local functions: run their bodies as plain nodes

        proto = inliner.inline_local_functions(proto)
    g = proto.graph
    _name_nodes(g)
    consts = _initializers(g)
    inputs = _bind_inputs(g, consts, dict(input_shapes or {}))
    outputs = [o.name for o in g.output]
    nodes, info, infer_err = _fold(proto, list(g.node), consts, inputs, outputs, opset)
    nodes = _prune(nodes, outputs)
    nodes = _fold_batchnorm(nodes, consts, outputs)
    return _absorb_input_transposes(_convert(nodes, consts, inputs, outputs, info, infer_err, opset, proto, strict))


def _absorb_input_transposes(graph: ir.Graph) -> ir.Graph:
    """A 4-D input read only by a Transpose to channels-first (keras2onnx and tf2onnx write one
    after every NHWC input) becomes that transposed tensor under the input's name: the session
    transposes each frame as it arrives, and the graph starts spatial, so a small change stays
    small instead of passing through a whole-tensor Transpose."""
    absorbed = set()
    for name in graph.inputs:
        users = graph.consumers(name)
        if len(users) != 1 or name in graph.outputs or len(graph.tensors[name].shape) != 4:
            continue
        t = users[0]
        if t.op != "transpose" or tuple(t.attrs["perm"]) != (0, 3, 1, 2) or t.outputs[0] in graph.outputs:
            continue
        out = t.outputs[0]
        for n in graph.nodes:
            n.inputs = [name if i == out else i for i in n.inputs]
        graph.nodes.remove(t)
        graph.tensors[name] = ir.Tensor(name, graph.tensors[out].shape)
        del graph.tensors[out]
        absorbed.add(name)
    graph.channels_last_inputs = frozenset(absorbed)
    return graph


# ---- parsing and inputs ---------------------------------------------------------------------

def parse_model(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # folding renames nodes; never touch the caller's proto
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        try:
            proto = onnx.load_from_string(data)
        except Exception as e:  # protobuf DecodeError and friends
            raise ir.ModelError(f"cannot parse ONNX model from {len(data)} bytes "
                                f"(truncated or not an ONNX file): {e}") from e
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ir.ModelError(f"model file not found: {path}")
        try:
            proto = onnx.load(path)
        except Exception as e:
            raise ir.ModelError(f"cannot load ONNX model {path} (truncated, not an ONNX "
                                f"file or missing external data): {e}") from e
    else:
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, "
                        f"not {type(model).__name__}")
    try:
        onnx.checker.check_model(_with_output_shapes(proto))
    except Exception as e:
        raise ir.ModelError(f"invalid ONNX model: {e}") from e
    newest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:
        if o.domain in _DEFAULT_DOMAINS and o.version > newest:
            raise ir.ModelError(f"model imports opset {o.version} of the default domain; the newest "
                                f"this onnx ({onnx.__version__}) knows is {newest}")
    return proto


def _with_output_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The checker wants a shape on every graph output; onnxruntime loads outputs declared with
    a type alone (shape inference gives them one), so check a copy that declares them rank-free."""
    bare = [o for o in proto.graph.output if o.type.HasField("tensor_type")
            and not o.type.tensor_type.HasField("shape")]
    if not bare:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for o in copy.graph.output:
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.shape.dim.add().dim_param = "?"
    return copy


def _default_opset(proto: onnx.ModelProto) -> int:
    for o in proto.opset_import:
        if o.domain in _DEFAULT_DOMAINS:
            return int(o.version)
    raise ir.ModelError("model imports no version of the default ONNX opset")


def _name_nodes(g: onnx.GraphProto) -> None:
    """Give every node a unique name: messages and IR nodes refer to it."""
    seen = set()
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        node.name = name


def _initializers(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {}
    try:
        for t in g.initializer:
            consts[t.name] = numpy_helper.to_array(t)
        for t in g.sparse_initializer:
            consts[t.values.name] = _densify(t)
    except Exception as e:
        raise ir.ModelError(f"cannot read initializer: {e}") from e
    return consts


def _densify(t: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(t.values)
    idx = numpy_helper.to_array(t.indices)
    dense = np.zeros(math.prod(t.dims), values.dtype)
    flat = idx if idx.ndim == 1 else np.ravel_multi_index(tuple(idx.T), tuple(t.dims))
    dense[flat] = values
    return dense.reshape(tuple(t.dims))


def declared_dims(tt) -> list | None:
    """A tensor type's dims as declared: ints, or a name (or "?") for a dynamic one; -1 and 0
    count as dynamic, as exporters (paddle2onnx) write them and onnxruntime reads them. None:
    no shape declared."""
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in tt.shape.dim]


def _bind_inputs(g: onnx.GraphProto, consts: dict, shapes: dict) -> list[onnx.ValueInfoProto]:
    """Graph inputs (initializers excluded) as ValueInfos with static float32 shapes."""
    real = [i for i in g.input if i.name not in consts]
    unknown = set(shapes) - {i.name for i in real}
    if unknown:
        raise ir.ModelError(f"input_shapes names {sorted(unknown)}, but the model's inputs are "
                            f"{[i.name for i in real]}")
    bound = []
    for vi in real:
        if not vi.type.HasField("tensor_type"):
            raise ir.ModelError(f"input {vi.name!r} is not a tensor")
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise ir.NotNative(f"input {vi.name!r} has type "
                                f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; "
                                f"reuserun runs float32 inputs only")
        dims = declared_dims(tt)
        given = shapes.get(vi.name)
        if given is not None:
            given = tuple(int(d) for d in given)
            if any(d <= 0 for d in given):
                raise ir.ModelError(f"input_shapes[{vi.name!r}] = {given}: dims must be positive")
            if dims is not None and (len(dims) != len(given) or any(
                    isinstance(d, int) and d != gd for d, gd in zip(dims, given))):
                raise ir.ModelError(f"input_shapes[{vi.name!r}] = {given} conflicts with the "
                                    f"model's shape {tuple(dims)}")
        elif dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
            shown = "unknown rank" if dims is None else str(tuple(dims))
            raise ir.ModelError(f"input {vi.name!r} has dynamic shape {shown}: bind it with "
                                f"input_shapes={{{vi.name!r}: (...)}} (the session's input_shape=)")
        else:
            given = tuple(dims)
        bound.append(helper.make_tensor_value_info(vi.name, onnx.TensorProto.FLOAT, given))
    return bound


# ---- constant folding and shape inference ---------------------------------------------------

def _infer(proto, nodes, consts, inputs, outputs) -> tuple[dict, str | None]:
    """name -> (elem_type, shape or None) for every tensor; and the strict-mode error, if any."""
    needed = {i for n in nodes for i in n.input} | set(outputs)
    inits, extra = [], []
    for name, v in consts.items():
        if name not in needed:
            continue
        if v.dtype.kind == "f" and v.size > _INFER_VALUE_LIMIT:
            extra.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
        else:
            inits.append(numpy_helper.from_array(v, name))
    graph = helper.make_graph(nodes, proto.graph.name or "g", inputs + extra,
                              [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    m = helper.make_model(graph, opset_imports=proto.opset_import,
                          ir_version=max(proto.ir_version, 4))
    err = None
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    except Exception as e:
        err = str(e).strip()
        try:
            m = onnx.shape_inference.infer_shapes(m, data_prop=True)
        except Exception:
            pass
    info = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        if vi.type.HasField("tensor_type"):
            info[vi.name] = (vi.type.tensor_type.elem_type, _static_shape(vi.type.tensor_type))
    for name, v in consts.items():
        info[name] = (helper.np_dtype_to_tensor_dtype(v.dtype) if v.dtype != object
                      else onnx.TensorProto.STRING, tuple(v.shape))
    return info, err


def _static_shape(tt) -> tuple | None:
    if not tt.HasField("shape"):
        return None
    dims = tt.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _fold(proto, nodes, consts, inputs, outputs, opset):
    """Fold constant nodes until a fixpoint; returns the remaining nodes and final shape info."""
    shape_fixes: dict[str, onnx.NodeProto] = {}  # stand-ins used by shape inference only
    while True:
        info, err = _infer(proto, [shape_fixes.get(n.name, n) for n in nodes], consts, inputs,
                           outputs)
        if _fix_ceil_pools(nodes, info, shape_fixes):
            continue  # Shape nodes must not fold the uncorrected sizes
        remaining, changed = [], False
        for node in nodes:
            values = _try_fold(node, consts, info, opset)
            if values is None:
                remaining.append(node)
                continue
            changed = True
            for name, v in zip(node.output, values):
                if name:
                    consts[name] = np.asarray(v)
        nodes = remaining
        if not changed:
            return nodes, info, err


def _fix_ceil_pools(nodes, info, shape_fixes) -> bool:
    """onnx's shape inference keeps a ceil_mode window that starts in the end padding, where
    onnxruntime drops it. For such a pool, shape inference sees a floor-mode stand-in whose end
    pads give the onnxruntime size."""
    changed = False
    for node in nodes:
        if (node.op_type not in ("MaxPool", "AveragePool") or node.name in shape_fixes
                or node.domain not in _DEFAULT_DOMAINS):
            continue
        a = attr_dict(node)
        x, y = info.get(node.input[0], (0, None))[1], info.get(node.output[0], (0, None))[1]
        if not a.get("ceil_mode", 0) or x is None or y is None or "kernel_shape" not in a:
            continue
        try:
            kernel, strides, dil, begins, ends, out = pool_geometry(a, x[2:])
        except Unsupported:
            continue
        if tuple(out) == tuple(y[2:]):
            continue
        # floor((i + b + e - ek) / s) + 1 == o  for  e = (o - 1) * s + ek - i - b
        ends = [max(e, (o - 1) * s + (k - 1) * d + 1 - i - b)
                for e, o, s, k, d, i, b in zip(ends, out, strides, kernel, dil, x[2:], begins)]
        keep = [attr for attr in node.attribute
                if attr.name not in ("auto_pad", "pads", "ceil_mode")]
        fixed = helper.make_node(node.op_type, node.input, node.output, name=node.name,
                                 pads=begins + ends, ceil_mode=0)
        fixed.attribute.extend(keep)
        shape_fixes[node.name] = fixed
        changed = True
    return changed


def _try_fold(node: onnx.NodeProto, consts: dict, info: dict, opset: int):
    """Output values if the node folds to constants, else None."""
    if node.domain not in _DEFAULT_DOMAINS or node.op_type in NONDETERMINISTIC:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        src = node.input[0]
        shape = consts[src].shape if src in consts else info.get(src, (None, None))[1]
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(math.prod(shape), np.int64)]
        a = attr_dict(node)
        return [np.array(shape[a.get("start", 0):a.get("end", len(shape))], np.int64)]
    ins = [i for i in node.input if i]
    if not all(i in consts for i in ins):
        return None
    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return [numpy_helper.to_array(node.attribute[0].t)]
    # A one-node model, not the bare node: the evaluator ignores `opsets` for a NodeProto and
    # would run e.g. Unsqueeze-13 on an opset-11 node.
    graph = helper.make_graph([node], "fold",
                              [onnx.ValueInfoProto(name=i) for i in dict.fromkeys(ins)],
                              [onnx.ValueInfoProto(name=o) for o in node.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        values = ReferenceEvaluator(model).run(None, {i: consts[i] for i in ins})
    except Exception:
        return None  # left in the graph: converted, or reported as unsupported
    it = iter(values)
    return [next(it) if o else None for o in node.output]


def _prune(nodes: list, outputs: list) -> list:
    """Drop nodes no graph output depends on."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]


def _fold_batchnorm(nodes: list, consts: dict, outputs: list) -> list:
    """Conv or ConvTranspose -> BatchNormalization (its output read only by the BN) becomes
    one Conv or ConvTranspose."""
    uses = defaultdict(int)
    for n in nodes:
        for i in n.input:
            uses[i] += 1
    for o in outputs:
        uses[o] += 1
    producer = {o: n for n in nodes for o in n.output}
    replaced, dropped = {}, set()
    for bn in nodes:
        if bn.op_type != "BatchNormalization" or bn.domain not in _DEFAULT_DOMAINS:
            continue
        a = attr_dict(bn)
        if a.get("training_mode", 0) or a.get("spatial", 1) != 1:
            continue
        if any(uses[o] for o in bn.output[1:] if o):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or conv.domain not in _DEFAULT_DOMAINS:
            continue
        if uses[conv.output[0]] != 1 or conv.input[1] not in consts:
            continue
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        if has_bias and conv.input[2] not in consts:
            continue
        if not all(i in consts for i in bn.input[1:5]):
            continue
        gamma, beta, mean, var = (consts[i] for i in bn.input[1:5])
        s, _ = bn_scale_shift(gamma, beta, mean, var, a.get("epsilon", 1e-5))
        w = consts[conv.input[1]].astype(np.float64)
        b = consts[conv.input[2]].astype(np.float64) if has_bias else 0.0
        w_name, b_name = f"{conv.name}/bn_folded_weight", f"{conv.name}/bn_folded_bias"
        if conv.op_type == "Conv":  # weights (Cout, Cin/g, k...): scale the first axis
            w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        else:  # (Cin, Cout/g, k...), output channel = group * Cout/g + second index
            g = int(attr_dict(conv).get("group", 1))
            rest = (1,) * (w.ndim - 2)
            w = (w.reshape((g, w.shape[0] // g) + w.shape[1:])
                 * s.reshape((g, 1, w.shape[1]) + rest)).reshape(w.shape)
        consts[w_name] = w.astype(np.float32)
        consts[b_name] = ((b - np.asarray(mean, np.float64)) * s
                          + np.asarray(beta, np.float64)).astype(np.float32)
        fused = onnx.NodeProto()
        fused.CopyFrom(conv)
        del fused.input[:]
        fused.input.extend([conv.input[0], w_name, b_name])
        fused.output[0] = bn.output[0]
        replaced[id(conv)] = fused
        dropped.add(id(bn))
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


# ---- conversion -----------------------------------------------------------------------------

def _convert(nodes, consts, inputs, outputs, info, infer_err, opset, proto, strict) -> ir.Graph:
    """Each node through its converter, or, where reuserun has no kernel for it (no converter,
    an attribute the kernels lack, a tensor that is not float32), into an island that an
    embedded onnxruntime runs; strict refuses those instead."""
    used = {i for n in nodes for i in n.input if i} | set(outputs)
    taken = set(info) | {o for n in nodes for o in n.output} | set(consts)
    foreign: dict[str, list[str]] = defaultdict(list)
    no_shape: list[str] = []
    items, new_consts, new_shapes = [], {}, {}  # per node: its IR nodes, or the node for onnxruntime
    for node in nodes:
        default = node.domain in _DEFAULT_DOMAINS
        key = node.op_type if default else f"{node.domain}.{node.op_type}"
        fn = CONVERTERS.get(node.op_type) if default else None
        tensors = [t for t in (*node.input, *node.output) if t and t not in consts]
        if fn is None:
            foreign[key].append(node.name)
            items.append(node)
            continue
        bad = [t for t in tensors if t in info and info[t][0] != onnx.TensorProto.FLOAT]
        if bad:
            kind = onnx.TensorProto.DataType.Name(info[bad[0]][0])
            foreign[key].append(f"{node.name} (non-constant {kind} tensor {bad[0]!r})")
            items.append(node)
            continue
        unknown = [t for t in tensors if info.get(t, (0, None))[1] is None
                   and (t in used or t in node.input)]
        if unknown:
            no_shape.extend(f"{t!r} (at node {node.name}, {node.op_type})" for t in unknown)
            continue
        ctx = Ctx(node=node, opset=opset, attrs=attr_dict(node),
                  in_shapes=[_shape_of(i, consts, info) if i else None for i in node.input],
                  out_shapes=[info.get(o, (0, None))[1] if o else None for o in node.output],
                  consts=consts, used=used, taken=taken)
        try:
            items.append(fn(node, ctx))
        except Unsupported as e:  # an attribute the kernels lack
            foreign[key].append(f"{node.name} ({e})")
            items.append(node)
            continue
        except ir.ModelError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as e:
            raise ir.ModelError(f"node {node.name} ({node.op_type}): {e}") from e
        new_consts.update(ctx.new_consts)
        new_shapes.update(ctx.new_shapes)
    if strict and foreign:
        raise ir.UnsupportedOpsError(dict(foreign), opset, strict=True)
    read_by = defaultdict(list)
    for node in nodes:
        for t in node.input:
            read_by[t].append(node)
    ir_nodes, missing, reasons = partition(items, read_by, outputs, consts, info, proto.opset_import,
                                           max(proto.ir_version, 7))
    if missing:
        raise ir.UnsupportedOpsError(missing, opset, reasons=reasons)
    # ops of other domains have no schema for onnx's strict inference; onnxruntime checks them
    if infer_err and not any(isinstance(it, onnx.NodeProto) and it.domain not in _DEFAULT_DOMAINS for it in items):
        raise ir.ModelError(f"shape inference failed: {infer_err}")
    if no_shape:
        raise ir.ModelError("no static shape after constant folding and shape inference for "
                            + ", ".join(no_shape))
    return _build_graph(ir_nodes, consts | new_consts, new_shapes, inputs, outputs, info, opset)


def _shape_of(name: str, consts: dict, info: dict):
    return tuple(consts[name].shape) if name in consts else info.get(name, (0, None))[1]


def _build_graph(ir_nodes, consts, new_shapes, inputs, outputs, info, opset) -> ir.Graph:
    tensors: dict[str, ir.Tensor] = {}

    def add_const(name):
        v = consts[name]
        if v.dtype.kind == "f":
            v = v.astype(np.float32, copy=False)
        tensors[name] = ir.Tensor(name, tuple(v.shape), v.dtype, np.ascontiguousarray(v))

    for vi in inputs:
        tensors[vi.name] = ir.Tensor(vi.name, _static_shape(vi.type.tensor_type))
    for n in ir_nodes:
        for i in n.inputs:
            if i not in tensors and i in consts:
                add_const(i)
        for o in n.outputs:
            if o:
                shape = new_shapes[o] if o in new_shapes else info[o][1]
                tensors[o] = ir.Tensor(o, tuple(shape))
    for o in outputs:
        if o not in tensors:
            if o not in consts:
                raise ir.ModelError(f"graph output {o!r} is never produced")
            add_const(o)
    _check_sizes(tensors)
    graph = ir.Graph(tensors, ir_nodes, [vi.name for vi in inputs], list(outputs), opset)
    graph.validate()
    return graph


# the kernels index a tensor's values and positions with 32-bit ints
MAX_ELEMENTS = 2**31 - 1


def _check_sizes(tensors: dict) -> None:
    """Every computed tensor holds at most MAX_ELEMENTS values."""
    for t in tensors.values():
        if t.is_const or t.shape is None:
            continue
        n = math.prod(t.shape)
        if n > MAX_ELEMENTS:
            raise ir.ModelError(f"tensor {t.name!r} of shape {t.shape} holds {n:,} values "
                                f"({4 * n / 2**30:.1f} GiB as float32); reuserun takes at most "
                                f"{MAX_ELEMENTS:,} a tensor")
