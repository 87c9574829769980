"""REINFORCE as the seed paper trained its Atari policy: sample actions from the policy, and at
the end of each episode minimise L = -sum_t R_t log pi(a_t | s_t), with R_t the discounted
returns (gamma 0.99) normalised to zero mean and unit variance over the episode.

Normalisation uses the population standard deviation plus 1e-8, so an episode of length 1 (or
with equal returns throughout) gives all-zero weights: a valid, empty update rather than NaN.
"""
from __future__ import annotations

import numpy as np

from reuserun.train.backward import backward, logits_of, softmax_logprob
from reuserun.train.forward import EpisodeForward
from reuserun.train.graph import TrainNet


def normalised_returns(rewards, gamma: float = 0.99, eps: float = 1e-8) -> np.ndarray:
    r = np.asarray(rewards, np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError(f"rewards must be a non-empty 1-D sequence, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise FloatingPointError("non-finite reward")
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return (out - out.mean()) / (out.std() + eps)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def sample(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF sampling from one uniform draw, so two learners given the same u agree."""
    return int(min(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"), len(probs) - 1))


class ReinforceLearner:
    """One policy trained with reuse: act() per frame, reward() per step, finish_episode()."""

    def __init__(self, net: TrainNet, optimizer, threads: int = 0, gamma: float = 0.99):
        self.net, self.opt, self.threads, self.gamma = net, optimizer, threads, gamma
        self.fwd = EpisodeForward(net, threads)
        self.actions: list[int] = []
        self.rewards: list[float] = []

    def probs(self, frame: np.ndarray) -> np.ndarray:
        return softmax(self.fwd.step(frame))

    def act(self, frame: np.ndarray, u: float) -> int:
        """Run the frame and sample an action with uniform draw u; the probabilities stay in
        last_probs."""
        self.last_probs = self.probs(frame)
        a = sample(self.last_probs, u)
        self.actions.append(a)
        return a

    def reward(self, r: float) -> None:
        self.rewards.append(float(r))

    def gradients(self) -> tuple[float, dict]:
        """(loss, gradients) of the recorded episode; consumes the record."""
        if len(self.rewards) != len(self.fwd):
            raise ValueError(f"{len(self.fwd)} frames but {len(self.rewards)} rewards")
        weights = normalised_returns(self.rewards, self.gamma)
        logits = logits_of(self.fwd)
        if not np.isfinite(logits).all():
            raise FloatingPointError("non-finite logits in the episode (NaN in a frame or the weights)")
        loss, dlogits = softmax_logprob(logits, np.asarray(self.actions), weights)
        return loss, backward(self.fwd, dlogits, self.threads)

    def finish_episode(self) -> float:
        """Update the weights from the episode, start a new one; returns the loss.
        On an error (NaN, mismatched lengths) the weights and the record are left as they were."""
        loss, grads = self.gradients()
        self.opt.step(self.net.params, grads)
        self.fwd.reset()
        self.actions, self.rewards = [], []
        return loss
