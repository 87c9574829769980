"""Ops without a converter, or with attributes the kernels lack: run over the whole tensor by
onnx's reference evaluator, or by a numpy equivalent where the evaluator is slow (its Erf calls
math.erf once per element: 128 ms for ConvNeXt's 1.2M-value GELU input, 20 ms here)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from .. import ir
from .converters import attr_dict


def erf(x: np.ndarray) -> np.ndarray:
    """erf within 4e-7 relative: Numerical Recipes' erfc (fractional error below 1.2e-7) in
    float32, in place, and a Taylor series in float64 below 0.5, where 1 - erfc would lose the
    small values' digits."""
    x = np.asarray(x, np.float32)
    a = np.abs(x)
    t = np.float32(1) / (np.float32(1) + np.float32(0.5) * a)
    p = np.full_like(t, 0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368, -1.26551223):
        p *= t
        p += np.float32(c)
    p -= a * a
    np.exp(p, out=p)
    p *= t  # erfc(|x|)
    np.subtract(np.float32(1), p, out=p)
    np.copysign(p, x, out=p)
    small = a < 0.5
    if small.any():
        xs = x[small].astype(np.float64)
        x2 = xs * xs
        p[small] = xs * (1.1283791670955126 + x2 * (-0.37612638903183754 + x2 * (0.11283791670955126 + x2 * (
            -0.026866170645131252 + x2 * (0.005223977625442188 + x2 * -0.0008548327023450852)))))
    return p


# folding these would freeze one random draw into the model
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}

# op type -> a numpy function of the node's inputs giving its one output, where the reference
# evaluator is slow
NUMPY_EQUIVALENTS = {"Erf": erf}

# ops run through onnx's reference evaluator never: they draw random numbers or hold subgraphs
# whose shapes the IR cannot fix
_NO_REFERENCE = NONDETERMINISTIC | {"If", "Loop", "Scan", "SequenceMap"}


def reference_node(node: onnx.NodeProto, consts: dict, info: dict, tensors: list, opset: int):
    """An op reuserun has no converter for, run by onnx's reference evaluator (numpy) over the
    whole tensor when an input changed, as an "onnx_op" IR node; None when that cannot be done
    exactly here: a random or control-flow op, or a tensor that is not float32 or has no static
    shape."""
    if node.op_type in _NO_REFERENCE or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    for t in tensors:
        elem, shape = info.get(t, (None, None))
        if elem != onnx.TensorProto.FLOAT or shape is None:
            return None
    names = list(dict.fromkeys(i for i in node.input if i))
    outputs = [o for o in node.output if o]
    shapes = [info[o][1] for o in outputs]
    numpy_fn = NUMPY_EQUIVALENTS.get(node.op_type)
    if numpy_fn is not None:
        def compute(values):
            return [numpy_fn(*values)]
    else:
        graph = helper.make_graph([node], node.name, [onnx.ValueInfoProto(name=i) for i in names],
                                  [onnx.ValueInfoProto(name=o) for o in outputs])
        evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))

        def compute(values):
            return evaluator.run(None, dict(zip(names, values)))

    def run(values):
        return [np.asarray(v, np.float32).reshape(s) for v, s in zip(compute(values), shapes)]

    return ir.Node("onnx_op", node.name, names, outputs,
                   {"run": run, "op_type": node.op_type, "onnx_attrs": attr_dict(node)}, onnx_op=node.op_type)


