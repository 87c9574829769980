"""Optimizers over a TrainNet's parameter dict, updated in place.

Adam follows torch.optim.Adam's arithmetic (bias corrections, eps added after the square root)
so a reuserun learner and a torch learner that start from the same weights stay together.
The padding of the packed fc0 weights gets zero gradients, so it stays zero under both.
"""
from __future__ import annotations

import math

import numpy as np

from reuserun.kernels import train as ktrain


def _check(params: dict, grads: dict) -> None:
    for k, g in grads.items():
        if k not in params or params[k].shape != g.shape:
            raise ValueError(f"gradient {k} {g.shape} does not match a parameter "
                             f"({params[k].shape if k in params else 'none'})")
        if not np.isfinite(g).all():
            raise FloatingPointError(f"non-finite gradient for {k}")


class SGD:
    def __init__(self, lr: float = 1e-2):
        self.lr = lr

    def step(self, params: dict, grads: dict) -> None:
        _check(params, grads)
        for k, g in grads.items():
            params[k] -= np.float32(self.lr) * g


class Adam:
    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, threads: int = 0):
        self.lr, self.betas, self.eps, self.threads = lr, betas, eps, threads
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        _check(params, grads)
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, g in grads.items():
            p = params[k]
            if k not in self.m:
                self.m[k], self.v[k] = np.zeros_like(p), np.zeros_like(p)
            ktrain.adam_update(p.reshape(-1), np.ascontiguousarray(g, np.float32).reshape(-1),
                               self.m[k].reshape(-1), self.v[k].reshape(-1), self.lr, b1, b2,
                               self.eps, bc1, math.sqrt(bc2), self.threads)
