"""Weights in and out: an ONNX policy net -> TrainNet (layers + trainable parameters), and the
trained parameters written back into a copy of the ONNX model.

Supported chain (the seed's Atari net and DQN-style nets):
    Conv (unpadded, any stride, group 1) [-> Relu] ... -> Flatten -> Gemm/MatMul
    [-> Relu | Gemm/MatMul ...] [-> Softmax]
The first Gemm after the convs is the "reused" Linear: it runs per changed pixel and its backward
uses prefix sums. Everything after it (the head) is small and runs densely per frame. The policy
is always softmax(last output): a final Softmax node is optional (Nature-DQN has none).

Parameters are float32 numpy arrays keyed "conv{i}.w" (O, I, kh, kw), "conv{i}.b" (O,),
"fc{j}.w" (out, in), "fc{j}.b" (out,), except "fc0.w", kept in the packed layout the kernels use
([H*W][C][pad8(out)], reuserun.kernels.conv.pack_spatial_gemm) so that an update needs no
repacking of the largest tensor.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from reuserun import ir
from reuserun.frontend.loader import load_model
from reuserun.kernels import conv as kconv


@dataclass
class ConvLayer:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    relu: bool
    in_shape: tuple[int, int, int]   # (H, W, C)
    out_shape: tuple[int, int, int]  # (OH, OW, O)


@dataclass
class TrainNet:
    input_name: str
    input_shape: tuple[int, int, int, int]    # (1, C, H, W)
    convs: list[ConvLayer]
    fc0_out: int                              # outputs of the reused Linear
    head: list[tuple]                         # ("relu",) or ("gemm", j) after fc0, in order
    softmax: bool                             # the ONNX model ends in Softmax
    params: dict[str, np.ndarray]
    onnx_model: onnx.ModelProto | None = None
    # param name -> (initializer name, transpose?) for export
    export_map: dict[str, tuple[str, bool]] = field(default_factory=dict)

    @property
    def actions(self) -> int:
        gemms = [op for op in self.head if op[0] == "gemm"]
        return self.params[f"fc{gemms[-1][1]}.b"].shape[0] if gemms else self.fc0_out

    def fc0_dense(self) -> np.ndarray:
        """fc0.w in ONNX's (out, C*H*W) layout (NCHW flatten order)."""
        oh, ow, c = self.convs[-1].out_shape
        packed = self.params["fc0.w"]
        return np.ascontiguousarray(
            packed[:, :, :self.fc0_out].transpose(2, 1, 0).reshape(self.fc0_out, c * oh * ow))

    def copy(self) -> TrainNet:
        out = copy.copy(self)
        out.params = {k: v.copy() for k, v in self.params.items()}
        return out


def _unsupported(node: ir.Node, why: str) -> ir.ModelError:
    return ir.ModelError(f"reuserun.train: node {node.name} ({node.onnx_op or node.op}) {why}; "
                         "training supports Conv [-> Relu] ... -> Flatten -> Gemm/MatMul "
                         "[-> Relu/Gemm/MatMul] [-> Softmax]")


def _linear(node: ir.Node, g: ir.Graph) -> tuple[np.ndarray, np.ndarray | None]:
    """(W (out, in), bias or None) of a Gemm/MatMul with constant weights."""
    w_t = g.tensors[node.inputs[1]]
    if not w_t.is_const:
        raise _unsupported(node, "has non-constant weights")
    w = np.asarray(w_t.value, np.float32)
    if node.op == "matmul":
        return np.ascontiguousarray(w.T), None
    a = node.attrs
    if a["trans_a"] or a["alpha"] != 1.0 or a["beta"] != 1.0:
        raise _unsupported(node, "has transA, alpha or beta other than the defaults")
    w = w if a["trans_b"] else w.T
    b = None
    if len(node.inputs) > 2:
        b = np.asarray(g.tensors[node.inputs[2]].value, np.float32).reshape(-1)
        if b.shape[0] != w.shape[0]:
            raise _unsupported(node, f"has a bias of shape {b.shape} that does not broadcast per output")
    return np.ascontiguousarray(w), b


def from_onnx(model) -> TrainNet:
    """Read a policy net and its initial weights from an ONNX model (path, bytes or ModelProto)."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    else:
        proto = onnx.load(model)
    g = load_model(proto)
    if len(g.inputs) != 1:
        raise ir.ModelError(f"reuserun.train: want one input, the model has {g.inputs}")
    shape = g.tensors[g.inputs[0]].shape
    if len(shape) != 4 or shape[0] != 1:
        raise ir.ModelError(f"reuserun.train: want a (1, C, H, W) input, got {shape}")
    params: dict[str, np.ndarray] = {}
    convs: list[ConvLayer] = []
    head: list[tuple] = []
    fc = 0
    softmax = False
    h, w, c = shape[2], shape[3], shape[1]
    stage = "conv"  # conv -> flat -> head
    nodes = [n for n in g.nodes if n.op != "identity"]
    for i, n in enumerate(nodes):
        if softmax:
            raise _unsupported(n, "follows the Softmax")
        if n.op == "conv" and stage == "conv":
            a = n.attrs
            if any(a["pads"]) or a["dilations"] != (1, 1) or a["group"] != 1:
                raise _unsupported(n, "is padded, dilated or grouped")
            wt = np.asarray(a["weight"], np.float32)
            kh, kw = wt.shape[2:]
            sh, sw = a["strides"]
            oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
            k = len(convs)
            params[f"conv{k}.w"] = np.ascontiguousarray(wt)
            b = a.get("bias")
            params[f"conv{k}.b"] = (np.zeros(wt.shape[0], np.float32) if b is None
                                    else np.asarray(b, np.float32).copy())
            relu = i + 1 < len(nodes) and nodes[i + 1].op == "act" and nodes[i + 1].attrs["kind"] == "relu"
            convs.append(ConvLayer((kh, kw), (sh, sw), relu, (h, w, c), (oh, ow, wt.shape[0])))
            h, w, c = oh, ow, wt.shape[0]
        elif n.op == "act" and n.attrs["kind"] == "relu" and stage == "conv" and convs:
            continue  # taken with its conv
        elif n.op in ("flatten", "reshape") and stage == "conv" and convs:
            if n.op == "flatten" and n.attrs["axis"] != 1 or n.op == "reshape" and n.attrs["shape"] != (1, h * w * c):
                raise _unsupported(n, "does not flatten to (1, C*H*W)")
            stage = "flat"
        elif n.op in ("gemm", "matmul") and stage in ("flat", "head"):
            wm, b = _linear(n, g)
            if stage == "flat":
                if wm.shape[1] != c * h * w:
                    raise _unsupported(n, f"takes {wm.shape[1]} features, the convs give {c * h * w}")
                params["fc0.w"] = kconv.pack_spatial_gemm(wm, c, h, w)
                stage = "head"
            else:
                params[f"fc{fc}.w"] = wm
                head.append(("gemm", fc))
            params[f"fc{fc}.b"] = np.zeros(wm.shape[0], np.float32) if b is None else b.copy()
            fc += 1
        elif n.op == "act" and n.attrs["kind"] == "relu" and stage == "head":
            head.append(("relu",))
        elif n.op == "softmax" and stage == "head":
            softmax = True
        else:
            raise _unsupported(n, "is not supported here")
    if stage != "head":
        raise ir.ModelError("reuserun.train: the model has no Conv ... -> Flatten -> Gemm chain")
    params = {k: np.array(v, np.float32) for k, v in params.items()}  # own, writable copies
    net = TrainNet(g.inputs[0], tuple(shape), convs, params["fc0.b"].shape[0], head, softmax, params)
    net.onnx_model = proto
    net.export_map = _export_map(proto, net)
    return net


def _export_map(proto: onnx.ModelProto, net: TrainNet) -> dict[str, tuple[str, bool]]:
    """Which initializer each parameter came from; empty if the model cannot be written back
    (folded BatchNormalization, computed weights): export_onnx then says why."""
    inits = {t.name for t in proto.graph.initializer}
    if any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        return {}
    out: dict[str, tuple[str, bool]] = {}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    fcs = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
    if len(convs) != len(net.convs):
        return {}
    for k, n in enumerate(convs):
        out[f"conv{k}.w"] = (n.input[1], False)
        if len(n.input) > 2 and n.input[2]:
            out[f"conv{k}.b"] = (n.input[2], False)
    for j, n in enumerate(fcs):
        trans = n.op_type == "MatMul" or not any(a.name == "transB" and a.i for a in n.attribute)
        out[f"fc{j}.w"] = (n.input[1], trans)
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2]:
            out[f"fc{j}.b"] = (n.input[2], False)
    if set(out) != set(net.params) or any(name not in inits for name, _ in out.values()):
        return {}
    return out


def export_onnx(net: TrainNet) -> onnx.ModelProto:
    """A copy of the source ONNX model with the trained weights in its initializers."""
    if net.onnx_model is None or not net.export_map:
        raise ir.ModelError("reuserun.train: cannot export: the source model's weights are not all "
                            "plain Conv/Gemm/MatMul initializers (BatchNormalization, a missing "
                            "bias, or computed weights)")
    dense = {k: v for k, v in net.params.items() if k != "fc0.w"}
    dense["fc0.w"] = net.fc0_dense()
    out = onnx.ModelProto()
    out.CopyFrom(net.onnx_model)
    by_name = {t.name: t for t in out.graph.initializer}
    for key, (init, trans) in net.export_map.items():
        old = by_name[init]
        value = dense[key].T if trans else dense[key]
        value = np.ascontiguousarray(value.reshape(tuple(old.dims)), np.float32)  # Gemm bias may be (1, N)
        old.CopyFrom(numpy_helper.from_array(value, init))
    return out
