"""Exact gradients of an episode recorded by EpisodeForward, at a cost proportional to the
recomputed area.

The loss is a sum over frames of per-frame losses of the logits (REINFORCE: -w_t log pi(a_t)).
A node (position p of a level, live over frames [a, b)) has one value over its interval, so its
gradient is the sum of the per-frame gradients over [a, b); backpropagating node sums gives the
dense gradient. The sweep runs frames in reverse:

  * per-frame rules (head, loss) run densely over the whole episode at once: they are small;
  * the reused Linear gets its summed output gradient over [a, b) from float64 prefix sums
    P[b] - P[a] (one W^T s per node, not per frame);
  * a conv node takes the gradient its consumers have accumulated (each consumer node adds its
    sum at its own start frame, which is never before the producer's: a consumer is recomputed
    whenever any input in its window is), then adds into dW, db and the accumulators of its
    input window;
  * after frame t the buffers are rolled back to frame t-1 with the recorded old values.

Each rule is one entry of a table: DENSE_RULES for the per-frame ops, NODE_RULES for the reused
ones (their kernels are in reuserun/kernels/train.pyx).
"""
from __future__ import annotations

import numpy as np

from reuserun.kernels import train as ktrain
from reuserun.train.forward import EpisodeForward

# --- per-frame rules, over (T, n) matrices ---------------------------------------------------

def softmax_logprob(logits: np.ndarray, actions: np.ndarray, weights: np.ndarray):
    """L = -sum_t w_t log softmax(logits_t)[a_t]: (L, dL/dlogits). float64 throughout."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(actions))
    loss = -float((weights * logp[rows, actions]).sum())
    grad = np.exp(logp)
    grad[rows, actions] -= 1.0
    return loss, grad * weights[:, None]


def relu_back(grad, inp, out, params, key):
    return grad * (out > 0), {}


def gemm_back(grad, inp, out, params, key):
    return grad @ params[f"{key}.w"].astype(np.float64), {f"{key}.w": grad.T @ inp, f"{key}.b": grad.sum(0)}


DENSE_RULES = {"relu": relu_back, "gemm": gemm_back}


# --- node rules: kernels bound to the forward's buffers --------------------------------------

def conv_nodes(fwd: EpisodeForward, k: int, accs: list, threads: int):
    layer, params = fwd.net.convs[k], fwd.net.params
    src = fwd.x if k == 0 else fwd.ys[k - 1]
    return ktrain.ConvGrad(src, fwd.ys[k], accs[k], accs[k - 1] if k > 0 else None,
                           ktrain.pack_conv_dx(params[f"conv{k}.w"]), layer.kernel,
                           layer.strides, layer.relu, threads)


def linear_nodes(fwd: EpisodeForward, accs: list, threads: int):
    return ktrain.LinearGrad(fwd.ys[-1], fwd.net.params["fc0.w"], accs[-1], threads)


NODE_RULES = {"conv": conv_nodes, "reused_linear": linear_nodes}


def logits_of(fwd: EpisodeForward) -> np.ndarray:
    return np.stack([acts[-1] for acts in fwd.acts])


def backward(fwd: EpisodeForward, dlogits: np.ndarray, threads: int = 0) -> dict[str, np.ndarray]:
    """Gradients of every parameter for per-frame logit gradients dlogits (T, actions).

    Consumes the record (the buffers end rolled back to frame 0); checks its input first, so on
    an error nothing has changed."""
    net, T = fwd.net, len(fwd)
    if T == 0:
        raise ValueError("backward over an empty episode")
    dlogits = np.asarray(dlogits, np.float64)
    if dlogits.shape != (T, net.actions):
        raise ValueError(f"dlogits has shape {dlogits.shape}, want {(T, net.actions)}")
    if not np.isfinite(dlogits).all():
        raise FloatingPointError("non-finite loss gradient (NaN or inf in the returns or logits)")
    if fwd.consumed:
        raise RuntimeError("this episode's record was already used by a backward")
    grads: dict[str, np.ndarray] = {}
    # Dense per-frame rules, head first, from the logits down to fc0's output.
    levels = [np.stack([acts[i] for acts in fwd.acts]).astype(np.float64)
              for i in range(len(net.head) + 1)]
    g = dlogits
    for i in reversed(range(len(net.head))):
        op = net.head[i]
        g, pg = DENSE_RULES[op[0]](g, levels[i], levels[i + 1], net.params,
                                   f"fc{op[1]}" if op[0] == "gemm" else "")
        grads.update(pg)
    grads["fc0.b"] = g.sum(0)
    npad = net.params["fc0.w"].shape[2]
    prefix = np.zeros((T + 1, npad))
    np.cumsum(g, axis=0, out=prefix[1:, :g.shape[1]])
    # Reverse sweep over the nodes.
    fwd.consumed = True
    accs = [np.zeros((h * w, c), np.float32) for h, w, c in (layer.out_shape for layer in net.convs)]
    lin = NODE_RULES["reused_linear"](fwd, accs, threads)
    convs = [NODE_RULES["conv"](fwd, k, accs, threads) for k in range(len(net.convs))]
    end = np.full(len(fwd.all_pix[-1]), T, np.int32)
    L = len(net.convs)
    for t in range(T - 1, -1, -1):
        rec = fwd.records[t]
        pix = rec[L][0]
        lin.run(pix, len(pix), prefix, t, end)
        for k in range(L - 1, -1, -1):
            pix = rec[k + 1][0]
            convs[k].run(pix, len(pix))
        if t > 0:
            for level, (pix, old) in enumerate(rec):
                if len(pix):
                    fwd.flat[level][pix] = old
    grads["fc0.w"] = lin.take_grad()
    for k, c in enumerate(convs):
        grads[f"conv{k}.w"], grads[f"conv{k}.b"] = c.take_grads()
    return {k: np.asarray(v, np.float32) for k, v in grads.items()}
