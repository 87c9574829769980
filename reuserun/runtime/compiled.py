"""A session's model: as given (SourceModel), and compiled (the IR after fusion plus packed
weights, shared by every session of one model at one input shape), with the check that a model's
caches fit this machine."""
from __future__ import annotations

import hashlib
import os
import threading
import weakref

import numpy as np

from reuserun import ir
from reuserun.frontend import load_model, precision
from reuserun.frontend.loader import parse_model
from reuserun.ir import ModelError
from reuserun.runtime.fuse import fuse
from reuserun.runtime.ort_surface import NodeArg, value_info_dims


class SourceModel:
    """The model a session was given (a path or bytes): its proto, the float32 proto reuserun
    computes with (a float16 model's frames are cast on the way in and its outputs on the way
    out), and its declared inputs and outputs."""

    def __init__(self, path_or_bytes):
        self.proto = parse_model(path_or_bytes)
        self.half = precision.uses_float16(self.proto)
        self.native = precision.to_float32(self.proto) if self.half else self.proto
        self.io_type = "tensor(float16)" if self.half else "tensor(float)"
        self.digest = hashlib.sha1(self.native.SerializeToString()).hexdigest()
        init = {i.name for i in self.proto.graph.initializer}
        self.input_args = [NodeArg(i.name, value_info_dims(i), self.io_type) for i in self.proto.graph.input
                           if i.name not in init]
        self.output_args = [NodeArg(o.name, value_info_dims(o), self.io_type) for o in self.proto.graph.output]
        self.non_float = any(i.type.tensor_type.elem_type != 1 for i in self.native.graph.input
                             if i.name not in init)  # inputs reuserun's caches cannot hold

    def compiled(self, input_shapes: dict, strict: bool) -> CompiledModel:
        return compiled_model(self.native, self.digest, input_shapes, strict)


class CompiledModel:
    """The IR after fusion plus packed weights; shared by all sessions of one model and shape."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.packed: dict = {}


_MODELS: weakref.WeakValueDictionary[tuple, CompiledModel] = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def compiled_model(proto, digest: str, input_shapes: dict, strict: bool) -> CompiledModel:
    """The model loaded and fused at these input shapes, made once while any session holds it."""
    key = (digest, tuple(sorted((k, tuple(v)) for k, v in input_shapes.items())), strict)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = CompiledModel(fuse(load_model(proto, input_shapes, strict)))
            _MODELS[key] = model
    return model


def check_memory(graph: ir.Graph) -> None:
    """Refuse a model whose caches alone exceed the machine's memory: allocating them would
    end in the kernel's out-of-memory killer rather than in an error."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    sizes = {n: 4 * int(np.prod(t.shape)) for n, t in graph.tensors.items()
             if not t.is_const and t.shape is not None}
    if sizes and sum(sizes.values()) > physical:
        big = max(sizes, key=sizes.get)
        raise ModelError(f"this model's activations take {sum(sizes.values()) / 2**30:.1f} GiB at this input "
                         f"size, more than this machine's {physical / 2**30:.1f} GiB (the largest, "
                         f"{big!r} of shape {graph.tensors[big].shape}, {sizes[big] / 2**30:.1f} GiB)")
