"""float16 models as float32 ones: reuserun's kernels compute in float32, so a model stored in
half precision is rewritten to float32 (weights, declared types, Casts to float16, constants), run
as such, and its outputs cast back. Results are float32 results rounded to float16, which can
differ from a float16 computation by float16's precision (about 1e-3 relative)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

HALF, FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


def uses_float16(proto: onnx.ModelProto) -> bool:
    g = proto.graph
    return any(t.data_type == HALF for t in g.initializer) or any(
        v.type.tensor_type.elem_type == HALF for v in (*g.input, *g.output))


def _as_float32(t: onnx.TensorProto) -> None:
    if t.data_type == HALF:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))


def _graph_to_float32(g: onnx.GraphProto) -> None:
    for t in g.initializer:
        _as_float32(t)
    for v in (*g.input, *g.output, *g.value_info):
        if v.type.tensor_type.elem_type == HALF:
            v.type.tensor_type.elem_type = FLOAT
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                _as_float32(a.t)
            elif a.type == onnx.AttributeProto.INT and a.name == "to" and a.i == HALF:
                a.i = FLOAT  # Cast(to=float16)
            elif a.type == onnx.AttributeProto.GRAPH:
                _graph_to_float32(a.g)


def to_float32(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of a float16 model."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    _graph_to_float32(out.graph)
    return out


def feed_as_float32(feed):
    """A float16 model's frames, in float32 (anything else is left for the session to check)."""
    if not isinstance(feed, dict):
        return feed
    return {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float16 else v
            for k, v in feed.items()}


def outputs_as_float16(outs: list) -> list:
    """Outputs rounded to float16 (bound float16 buffers are already)."""
    return [o if o.dtype == np.float16 else o.astype(np.float16) for o in outs]
