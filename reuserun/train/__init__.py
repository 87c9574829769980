"""Training with reuse: exact policy gradients at a cost proportional to what changed.

    net = from_onnx(model)                       # weights in
    learner = ReinforceLearner(net, Adam(1e-3))
    ... learner.act(frame, u); learner.reward(r) ... learner.finish_episode()
    export_onnx(net)                             # weights out, runs in onnxruntime / reuserun

graph.py (weights in/out), forward.py (forward with reuse, node record), backward.py (reverse
sweep, one rule per op), optim.py (SGD, Adam), reinforce.py (the episode loop), torch_ref.py
(the same net in PyTorch, for tests and the benchmark; needs torch).
"""
from reuserun.train.backward import backward, softmax_logprob
from reuserun.train.forward import EpisodeForward
from reuserun.train.graph import TrainNet, export_onnx, from_onnx
from reuserun.train.optim import SGD, Adam
from reuserun.train.reinforce import ReinforceLearner, normalised_returns

__all__ = ["Adam", "EpisodeForward", "ReinforceLearner", "SGD", "TrainNet", "backward",
           "export_onnx", "from_onnx", "normalised_returns", "softmax_logprob"]
