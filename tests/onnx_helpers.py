"""Helpers for building tiny ONNX models in tests and running them with onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def vi(name: str, shape=None, elem_type: int = FLOAT) -> onnx.ValueInfoProto:
    """A tensor ValueInfo; shape entries may be ints or strings (dynamic dims), None = no shape."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def rand(*shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17,
               ir_version: int | None = None) -> onnx.ModelProto:
    """A single-graph model (not checked: tests build broken ones on purpose).

    inputs / outputs: ValueInfoProtos, or (name, shape) pairs (float32), or bare output names
    (type and shape filled in by shape inference, as the checker wants them).
    initializers: TensorProtos or (name, array) pairs.
    """
    def as_vi(v, allow_bare):
        if isinstance(v, onnx.ValueInfoProto):
            return v
        if isinstance(v, str) and allow_bare:
            return onnx.ValueInfoProto(name=v)
        return vi(*v)

    inits = [t if isinstance(t, onnx.TensorProto) else const(*t) for t in initializers]
    graph = helper.make_graph(list(nodes), "test", [as_vi(i, False) for i in inputs],
                              [as_vi(o, True) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # Old opsets need an IR version onnxruntime accepts alongside them.
    model.ir_version = ir_version or min(onnx.IR_VERSION, 10)
    if any(not o.HasField("type") for o in graph.output):
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        typed = {o.name: o for o in inferred.graph.output}
        for o in model.graph.output:
            if not o.HasField("type"):
                if not typed[o.name].type.tensor_type.HasField("shape"):
                    raise ValueError(f"give output {o.name!r} as (name, shape): "
                                     "shape inference cannot tell")
                o.CopyFrom(typed[o.name])
    return model


def node(op_type: str, inputs, outputs, name: str | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op_type, list(inputs), list(outputs), name=name or None, **attrs)


def run_ort(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # Graph optimisations would fold ops onnxruntime itself then runs; test the plain kernels.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def one_op_model(op_type: str, x_shape, inputs=(), inits: dict | None = None, opset: int = 17,
                 outputs=("y",), **attrs) -> onnx.ModelProto:
    """One `op_type` node reading float input x (x_shape), then `inputs` by name ("" = absent),
    with `inits` {name: array} as initializers. outputs: names or (name, shape) pairs."""
    n = node(op_type, ["x", *inputs], [o if isinstance(o, str) else o[0] for o in outputs],
             **attrs)
    return make_model([n], [("x", x_shape)], list(outputs), list((inits or {}).items()), opset)
