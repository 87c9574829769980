"""A TrainNet as a PyTorch module with the same weights: the dense reference for the gradient
tests and the dense learner of bench/atari_train.py. Needs torch (the test/bench extra)."""
from __future__ import annotations

import numpy as np

from reuserun.train.graph import TrainNet


def to_torch(net: TrainNet, dtype=None):
    import torch
    from torch import nn

    dtype = dtype or torch.float32
    layers = []
    for k, layer in enumerate(net.convs):
        w = net.params[f"conv{k}.w"]
        conv = nn.Conv2d(w.shape[1], w.shape[0], layer.kernel, layer.strides)
        conv.weight.data = torch.tensor(w)
        conv.bias.data = torch.tensor(net.params[f"conv{k}.b"])
        layers.append(conv)
        if layer.relu:
            layers.append(nn.ReLU())
    layers.append(nn.Flatten())
    fc = {0: net.fc0_dense()}
    for op in [("gemm", 0)] + list(net.head):
        if op[0] == "relu":
            layers.append(nn.ReLU())
            continue
        j = op[1]
        w = fc[0] if j == 0 else net.params[f"fc{j}.w"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data = torch.tensor(w)
        lin.bias.data = torch.tensor(net.params[f"fc{j}.b"])
        layers.append(lin)
    return nn.Sequential(*layers).to(dtype)


def torch_grads(model, net: TrainNet) -> dict[str, np.ndarray]:
    """The module's .grad in TrainNet's names and layouts (fc0.w packed like the params)."""
    from reuserun.kernels import conv as kconv

    convs = [m for m in model if m.__class__.__name__ == "Conv2d"]
    lins = [m for m in model if m.__class__.__name__ == "Linear"]
    out = {}
    for k, m in enumerate(convs):
        out[f"conv{k}.w"] = m.weight.grad.double().numpy()
        out[f"conv{k}.b"] = m.bias.grad.double().numpy()
    for j, m in enumerate(lins):
        out[f"fc{j}.w"] = m.weight.grad.double().numpy()
        out[f"fc{j}.b"] = m.bias.grad.double().numpy()
    oh, ow, c = net.convs[-1].out_shape
    out["fc0.w"] = kconv.pack_spatial_gemm(out["fc0.w"], c, oh, ow).astype(np.float64)
    return out
