"""The one IR: tensors with static shapes, and nodes in topological order.

Nothing here imports onnx. Shapes are logical ONNX shapes (N, C, H, W) or (N, C, L);
the runtime decides storage layout. Every constant is a numpy array in `Tensor.value`.

Node ops and their attrs (all attrs already resolved to plain Python / numpy values):

  conv            x -> y. weight (O, I/g, kh, kw) float32, bias (O,) or None, strides (sh, sw),
                  pads (top, left, bottom, right), dilations (dh, dw), group. After the graph
                  optimizer: act (a fused activation) and post, a per-channel (scale, shift)
                  applied after it.
                  1-D convs are given as 2-D with kh == 1 (strides/pads/dilations padded with 1/0).
  conv_transpose  x -> y. weight (I, O/g, kh, kw), bias or None, strides, pads (t, l, b, r),
                  dilations, group. Output shape in the output tensor (output_padding resolved).
  maxpool         x -> y. kernel (kh, kw), strides, pads (t, l, b, r), dilations.
  avgpool         x -> y. kernel, strides, pads, count_include_pad (bool).
                  ceil_mode is already reflected in the output shape; kernels clip at the input edge.
  global_avgpool, global_maxpool   x -> y (N, C, 1, 1).
  conv_transpose, maxpool, avgpool and resize also carry out_shape (the output tensor's shape),
  which output_padding, ceil_mode and sizes leave implicit.
  act             x -> y. kind: an activation (kernels.info.ACT_CODES: those the kernels fuse);
                  alpha, beta floats: leaky_relu/elu alpha; clip
                  alpha = min, beta = max (-inf / inf when absent); hard_sigmoid alpha, beta;
                  for 'prelu' attrs['slope'] is an array broadcastable to x (usually (C, 1, 1)).
  binary          a, b -> y. kind in add/sub/mul/div; numpy broadcasting (either may be constant).
  resize          x -> y. mode 'nearest' | 'linear'; coord_mode (ONNX coordinate_transformation_mode);
                  nearest_mode; scales (per axis, float); output shape in the output tensor.
  concat          xs -> y. axis (non-negative).
  slice           x -> y. starts, ends, steps: one entry per axis of x, normalized so that
                  y = x[tuple(slice(s, e, st) ...)] with Python semantics (ends may be None).
  split           x -> ys. axis, sizes (list of ints).
  pad             x -> y. pads: [(before, after)] per axis; mode 'constant' | 'reflect' | 'edge'; value.
  flatten         x -> y. axis.
  reshape         x -> y. shape (tuple, resolved, no 0 / -1).
  transpose       x -> y. perm.
  gemm            a, b[, c] -> y. alpha, beta, trans_a, trans_b.
  matmul          a, b -> y.
  softmax         x -> y. axis (non-negative; opset < 13 semantics already normalized).
  identity        x -> y.
  onnx_op         xs -> ys. ONNX nodes without a kernel (Sqrt, Pow, Erf, Equal+Where...), a
                  partition: attrs run (values -> values, an embedded onnxruntime session, from
                  the front-end), op_type, onnx_nodes. Run over the whole tensors; the inputs and
                  outputs it shares with the graph are float32 with static shapes.
  channel_norm    x -> y. scale (C,), bias (C,), epsilon: each pixel's channels normalized to mean 0
                  and variance 1, then scaled and shifted per channel (a LayerNormalization over
                  a channels-last tensor's last axis, moved to the channels-first layout).
  channel_shuffle x -> y. index (C,) int32: y[:, c] = x[:, index[c]], a channel permutation
                  (ShuffleNet's Reshape, Transpose, Reshape, recognised by the graph optimizer)
                  or a selection of x's channels (a channel slice of such a permutation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPS = ("conv", "conv_transpose", "maxpool", "avgpool", "global_avgpool", "global_maxpool", "act",
       "binary", "resize", "concat", "slice", "split", "pad", "flatten", "reshape", "transpose",
       "gemm", "matmul", "softmax", "identity", "channel_shuffle", "channel_norm",
       "onnx_op")


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float32)
    value: np.ndarray | None = None  # set for constants

    @property
    def is_const(self) -> bool:
        return self.value is not None


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    onnx_op: str = ""  # the ONNX op it came from, for messages


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    opset: int = 0
    # inputs the model takes channels-last (N, H, W, C) through a leading Transpose to (N, C, H,
    # W): in the graph they are the transposed tensor, (N, C, H, W), under the input's name
    channels_last_inputs: frozenset = frozenset()

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def producer(self, name: str) -> Node | None:
        for n in self.nodes:
            if name in n.outputs:
                return n
        return None

    def validate(self) -> None:
        assert all(n.op in OPS for n in self.nodes), [n.op for n in self.nodes if n.op not in OPS]
        known = set(self.inputs) | {k for k, t in self.tensors.items() if t.is_const}
        for n in self.nodes:
            missing = [i for i in n.inputs if i not in known]
            assert not missing, f"node {n.name} reads {missing} before they are produced"
            known.update(n.outputs)
        for o in self.outputs:
            assert o in known, f"graph output {o} is never produced"


class ModelError(ValueError):
    """A model reuserun cannot load: malformed, truncated or with unsupported ops."""


class InputError(ValueError):
    """A frame reuserun refuses; the session's cached state is left as it was."""


class NotNative(ModelError):
    """A model reuserun's kernels cannot run as it is (an op, a dtype, a batch of frames), which
    onnxruntime may: a session runs it whole in onnxruntime unless strict."""


class UnsupportedOpsError(NotNative):
    """Raised at load time, listing every unsupported op type with its nodes."""

    SHOWN = 3  # node names shown per op type

    def __init__(self, missing: dict[str, list[str]], opset: int, strict: bool = False,
                 reasons: dict[str, str] | None = None):
        self.missing = missing
        self.opset = opset
        parts = []
        for op, nodes in sorted(missing.items()):
            shown = ", ".join(n if len(n) <= 60 else n[:57] + "..." for n in nodes[:self.SHOWN])
            more = f", {len(nodes) - self.SHOWN} more" if len(nodes) > self.SHOWN else ""
            why = f": {reasons[op]}" if reasons and op in reasons else ""
            parts.append(f"{op} x{len(nodes)} ({shown}{more}){why}")
        what = ("node(s) reuserun has no kernel for (strict=True refuses what would run in onnxruntime)"
                if strict else "node(s) that cannot run")
        super().__init__(f"model (opset {opset}) has {sum(map(len, missing.values()))} {what}: "
                         + "; ".join(parts))
