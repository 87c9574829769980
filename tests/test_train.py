"""reuserun.train: reuse gradients against PyTorch's dense autograd, the forward's bit-exactness,
weights in and out of ONNX, Adam against torch, a toy env that learns, and bad input."""

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import reuserun
from reuserun import zoo
from reuserun.bench import ort_session
from reuserun.train import (
    SGD,
    Adam,
    EpisodeForward,
    ReinforceLearner,
    backward,
    export_onnx,
    from_onnx,
    normalised_returns,
    softmax_logprob,
)
from reuserun.train.backward import logits_of

TOL = 1e-4


# --- random nets and episodes ----------------------------------------------------------------

def policy_model(rng, cin, convs, hw, hidden, actions, matmul, softmax) -> onnx.ModelProto:
    """Conv(+Relu) ... -> Flatten -> Gemm/MatMul [-> Relu -> Gemm/MatMul] [-> Softmax]."""
    nodes, inits = [], []

    def init(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    x, c, (h, w) = "frame", cin, hw
    for i, (cout, k, s, relu) in enumerate(convs):
        wt = rng.normal(0, np.sqrt(2.0 / (c * k * k)), (cout, c, k, k))
        y = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, init(f"w{i}", wt), init(f"b{i}", rng.normal(0, 0.1, cout))],
                                      [y], kernel_shape=[k, k], strides=[s, s]))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            y += "r"
        x, c, h, w = y, cout, (h - k) // s + 1, (w - k) // s + 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x, n = "flat", c * h * w
    outs = ([hidden] if hidden else []) + [actions]
    for j, m in enumerate(outs):
        wt = rng.normal(0, np.sqrt(1.0 / n), (m, n))
        y = f"fc{j}"
        if matmul:
            nodes.append(helper.make_node("MatMul", [x, init(f"fw{j}", wt.T)], [y]))
        else:
            nodes.append(helper.make_node("Gemm", [x, init(f"fw{j}", wt), init(f"fb{j}", rng.normal(0, 0.1, m))],
                                          [y], transB=1))
        x, n = y, m
        if j + 1 < len(outs):
            nodes.append(helper.make_node("Relu", [x], [x + "r"]))
            x += "r"
    if softmax:
        nodes.append(helper.make_node("Softmax", [x], ["probs"], axis=1))
        x = "probs"
    frame = helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, cin, *hw])
    graph = helper.make_graph(nodes, "policy", [frame],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


@st.composite
def nets(draw):
    nconv = draw(st.integers(1, 3))
    convs = [(draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.booleans()))
             for _ in range(nconv)]
    h = w = 1
    for _, k, s, _ in reversed(convs):  # input size that leaves at least one output position
        h, w = (h - 1) * s + k, (w - 1) * s + k
    hw = (h + draw(st.integers(0, 6)), w + draw(st.integers(0, 6)))
    hidden = draw(st.sampled_from([0, 0, 5]))
    return dict(cin=draw(st.integers(1, 3)), convs=convs, hw=hw, hidden=hidden,
                actions=draw(st.integers(2, 5)), matmul=draw(st.booleans()), softmax=draw(st.booleans()))


def episode(rng, shape, T, modes=None):
    """Frames where each step changes nothing, everything, or a random pixel subset."""
    frames = [rng.random(shape, dtype=np.float32)]
    for _ in range(T - 1):
        f = frames[-1].copy()
        mode = rng.choice(["none", "full", "some", "some"]) if modes is None else modes
        mask = {"none": np.zeros(shape[2:], bool), "full": np.ones(shape[2:], bool)}.get(
            mode, rng.random(shape[2:]) < rng.uniform(0.02, 0.4))
        f[:, :, mask] = rng.random((shape[1], int(mask.sum())), dtype=np.float32)
        frames.append(f)
    return frames


def torch_reference(net, frames, actions, weights):
    """Dense PyTorch autograd over the whole episode: (loss, grads in TrainNet's layout)."""
    torch = pytest.importorskip("torch")
    from reuserun.train.torch_ref import to_torch, torch_grads

    # in float64, so the reference adds no rounding of its own to reuserun's float32 error
    model = to_torch(net).double()
    logp = torch.log_softmax(model(torch.from_numpy(np.concatenate(frames)).double()), 1)
    loss = -(torch.from_numpy(weights) * logp[torch.arange(len(frames)), torch.from_numpy(actions)]).sum()
    loss.backward()
    return float(loss.detach()), torch_grads(model, net)


def rel_err(a, b, layer_norm: float = 0.0) -> float:
    """Relative error against the larger of the tensor's and its layer's gradient norm: a bias
    gradient that is a sum cancelling to almost nothing still carries the float32 rounding of
    its terms, which are on the layer's scale."""
    scale = max(np.linalg.norm(b), layer_norm, 1e-6)  # all-zero gradients (dead ReLUs) compare absolutely
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / scale)


def layer_norms(grads: dict) -> dict:
    """Gradient norm of each layer (its weight and bias together), by parameter name."""
    layers = {}
    for k, g in grads.items():
        layers.setdefault(k.split(".")[0], []).append(np.linalg.norm(g))
    return {k: float(np.linalg.norm(layers[k.split(".")[0]])) for k in grads}


def reuse_gradients(net, frames, actions, weights, dense=False):
    fwd = EpisodeForward(net, threads=2, dense=dense)
    for f in frames:
        fwd.step(f)
    logits = logits_of(fwd)
    loss, dlogits = softmax_logprob(logits, actions, weights)
    return logits, loss, backward(fwd, dlogits, threads=2)


def check_against_torch(net, frames, rng):
    T = len(frames)
    actions = rng.integers(0, net.actions, T)
    weights = rng.normal(size=T)
    logits, loss, grads = reuse_gradients(net, frames, actions, weights)
    dense_logits, _, dense_grads = reuse_gradients(net, frames, actions, weights, dense=True)
    assert np.array_equal(logits, dense_logits), "reuse forward differs from the dense forward"
    t_loss, t_grads = torch_reference(net, frames, actions, weights)
    assert abs(loss - t_loss) <= TOL * max(1.0, abs(t_loss))
    assert set(grads) == set(t_grads)
    norms = layer_norms(t_grads)
    for k in grads:
        assert grads[k].shape == t_grads[k].shape, k
        assert rel_err(grads[k], t_grads[k], norms[k]) <= TOL, (k, rel_err(grads[k], t_grads[k], norms[k]))
        assert rel_err(dense_grads[k], t_grads[k], norms[k]) <= TOL, k


# --- gradients --------------------------------------------------------------------------------

@pytest.mark.torch
@given(spec=nets(), T=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_reuse_gradients_match_torch_dense(spec, T, seed):
    pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    net = from_onnx(policy_model(rng, **spec))
    check_against_torch(net, episode(rng, net.input_shape, T), rng)


@pytest.mark.parametrize("model", [zoo.atari_policy(6, 8, 23, 19, actions=4, seed=3),
                                   zoo.nature_dqn(2, 44, 5, seed=1)], ids=["seed_net", "nature_dqn"])
@pytest.mark.torch
def test_zoo_nets_gradients(model):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    net = from_onnx(model)
    check_against_torch(net, episode(rng, net.input_shape, 10), rng)


@pytest.mark.torch
def test_long_sparse_episode_with_static_runs():
    """Long-lived nodes (many frames without change) exercise the prefix sums and the sweep."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    net = from_onnx(zoo.atari_policy(4, 6, 20, 16, actions=3, seed=2))
    frames = episode(rng, net.input_shape, 1)
    for t in range(60):
        f = frames[-1].copy()
        if t % 7 == 3:  # a small moving blob, else nothing changes
            y, x = rng.integers(0, 17), rng.integers(0, 13)
            f[0, 0, y:y + 3, x:x + 3] = rng.random((3, 3))
        frames.append(f)
    check_against_torch(net, frames, rng)


# --- weights in and out -----------------------------------------------------------------------

@pytest.mark.parametrize("model", [zoo.atari_policy(4, 8, 21, 17, actions=3, seed=5),
                                   zoo.nature_dqn(2, 44, 4, seed=2)], ids=["seed_net", "nature_dqn"])
def test_export_round_trip_after_training(model):
    rng = np.random.default_rng(2)
    net = from_onnx(model)
    before = {k: v.copy() for k, v in net.params.items()}
    learner = ReinforceLearner(net, Adam(1e-2))
    for _ in range(2):
        for f in episode(rng, net.input_shape, 5):
            learner.act(f, rng.random())
            learner.reward(rng.random())
        learner.finish_episode()
    assert all(not np.array_equal(before[k], net.params[k]) for k in before)
    exported = export_onnx(net)
    onnx.checker.check_model(exported)
    again = from_onnx(exported)
    for k in net.params:
        assert np.array_equal(again.params[k], net.params[k]), k
    ort = ort_session(exported.SerializeToString(), 1)
    sess = reuserun.InferenceSession(exported)
    fwd = EpisodeForward(net)
    for f in episode(rng, net.input_shape, 4):
        ours = fwd.step(f).astype(np.float64)
        if net.softmax:  # the model outputs probabilities, else the logits themselves
            ours = np.exp(ours - ours.max())
            ours /= ours.sum()
        feed = {net.input_name: f}
        np.testing.assert_allclose(ort.run(None, feed)[0][0], ours, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sess.run(None, feed)[0][0], ours, rtol=1e-5, atol=1e-5)


def test_export_refuses_folded_batchnorm():
    net = from_onnx(zoo.atari_policy(2, 2, 9, 9, actions=2))
    net.export_map = {}
    with pytest.raises(reuserun.ModelError, match="cannot export"):
        export_onnx(net)


def test_unsupported_nets_are_refused():
    rng = np.random.default_rng(0)
    model = policy_model(rng, 1, [(2, 3, 1, True)], (10, 10), 0, 2, False, True)
    # the same conv padded, on an input 2 smaller: shapes still agree, padding is refused
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = 8
    del model.graph.value_info[:]
    with pytest.raises(reuserun.ModelError, match="padded"):
        from_onnx(model)


# --- optimizers -------------------------------------------------------------------------------

@pytest.mark.torch
def test_adam_and_sgd_follow_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=(7, 5)).astype(np.float32)
    grads = [rng.normal(size=p0.shape).astype(np.float32) for _ in range(4)]
    for ours, theirs in ((Adam(1e-2), lambda q: torch.optim.Adam([q], lr=1e-2)),
                         (SGD(0.1), lambda q: torch.optim.SGD([q], lr=0.1))):
        params = {"w": p0.copy()}
        q = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        opt = theirs(q)
        for g in grads:
            ours.step(params, {"w": g})
            q.grad = torch.from_numpy(g)
            opt.step()
        np.testing.assert_allclose(params["w"], q.detach().numpy(), rtol=1e-5, atol=1e-6)


# --- learning ---------------------------------------------------------------------------------

class SideEnv:
    """Toy env: a bright 3x3 blob appears in the left or right half of a noisy 12x14 frame; the
    reward is 1 for the action naming its side. 16 steps per episode. Random play scores 8."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.background = (self.rng.random((1, 1, 12, 14)) * 0.2).astype(np.float32)

    def observe(self):
        self.side = int(self.rng.integers(2))
        f = self.background.copy()
        y, x = self.rng.integers(0, 10), self.rng.integers(0, 5) + 7 * self.side
        f[0, 0, y:y + 3, x:x + 3] = 1.0
        return f


def play(net, env, rng, episodes, learner=None):
    """Mean score per episode, sampling from the policy; learner: update after each episode."""
    scores = []
    for _ in range(episodes):
        fwd = EpisodeForward(net) if learner is None else None
        score = 0.0
        for _ in range(16):
            f = env.observe()
            if learner is None:
                logits = fwd.step(f).astype(np.float64)
                p = np.exp(logits - logits.max())
                a = int(rng.random() * p.sum() > p[0])
            else:
                a = learner.act(f, rng.random())
            r = float(a == env.side)
            score += r
            if learner is not None:
                learner.reward(r)
        if learner is not None:
            learner.finish_episode()
        scores.append(score)
    return float(np.mean(scores))


def test_short_training_run_learns_toy_env():
    rng = np.random.default_rng(4)
    net = from_onnx(policy_model(rng, 1, [(4, 3, 1, True), (4, 3, 2, True)], (12, 14), 0, 2, False, True))
    env = SideEnv(5)
    untrained = play(net, env, rng, 20)
    play(net, env, rng, 40, ReinforceLearner(net, Adam(2e-2), gamma=0.5))
    trained = play(net, env, rng, 20)
    # random play scores 8 of 16
    assert trained >= max(untrained, 8.0) + 4.0, (untrained, trained)


# --- bad input --------------------------------------------------------------------------------

def test_mismatched_frame_shape_leaves_state():
    net = from_onnx(zoo.atari_policy(2, 3, 9, 9, actions=2))
    fwd = EpisodeForward(net)
    f = np.random.default_rng(0).random((1, 1, 9, 9), dtype=np.float32)
    first = fwd.step(f).copy()
    for bad in (np.zeros((1, 1, 9, 8), np.float32), np.zeros((1, 2, 9, 9), np.float32), np.zeros((9, 9), np.float32)):
        with pytest.raises(reuserun.InputError, match="shape"):
            fwd.step(bad)
    assert len(fwd) == 1
    assert np.array_equal(fwd.step(f), first)


def test_mismatched_gradient_shape_and_lengths():
    net = from_onnx(zoo.atari_policy(2, 3, 9, 9, actions=2))
    fwd = EpisodeForward(net)
    fwd.step(np.zeros((1, 1, 9, 9), np.float32))
    with pytest.raises(ValueError, match="shape"):
        backward(fwd, np.zeros((1, 3)))
    learner = ReinforceLearner(net, SGD(0.1))
    learner.act(np.zeros((1, 1, 9, 9), np.float32), 0.5)
    with pytest.raises(ValueError, match="rewards"):
        learner.finish_episode()


def test_nan_in_returns_or_loss_raises_and_keeps_state():
    rng = np.random.default_rng(6)
    net = from_onnx(zoo.atari_policy(2, 3, 9, 9, actions=2))
    before = {k: v.copy() for k, v in net.params.items()}
    learner = ReinforceLearner(net, Adam(1e-2))
    for r in (1.0, float("nan"), 0.0):
        learner.act(rng.random((1, 1, 9, 9), dtype=np.float32), rng.random())
        learner.reward(r)
    with pytest.raises(FloatingPointError, match="non-finite reward"):
        learner.finish_episode()
    assert all(np.array_equal(before[k], net.params[k]) for k in before)
    learner.rewards[1] = 0.5  # the record is intact: fixing the reward lets the update run
    learner.finish_episode()
    assert any(not np.array_equal(before[k], net.params[k]) for k in before)
    # a NaN frame is refused at the door (a ReLU would hide it from the loss, not from dW)
    f = rng.random((1, 1, 9, 9), dtype=np.float32)
    learner.act(f, 0.5)
    f[0, 0, 3, 3] = np.nan
    with pytest.raises(reuserun.InputError, match="NaN"):
        learner.act(f, 0.5)
    assert len(learner.fwd) == 1 and len(learner.actions) == 1
    # NaN in the loss gradient: refused before the sweep touches anything
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        backward(learner.fwd, np.full((1, 2), np.nan))
    assert not learner.fwd.consumed


@pytest.mark.torch
def test_episode_of_length_one():
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    net = from_onnx(zoo.atari_policy(3, 4, 10, 11, actions=3))
    assert np.array_equal(normalised_returns([5.0]), [0.0])
    check_against_torch(net, episode(rng, net.input_shape, 1), rng)  # arbitrary weight, T = 1
    before = {k: v.copy() for k, v in net.params.items()}
    learner = ReinforceLearner(net, SGD(0.1))
    learner.act(rng.random(net.input_shape, dtype=np.float32), 0.3)
    learner.reward(1.0)
    learner.finish_episode()  # normalised return 0: a valid, empty update
    assert all(np.array_equal(before[k], net.params[k]) for k in before)


# --- memory -----------------------------------------------------------------------------------

def test_record_memory_is_nodes_plus_per_frame_scalars():
    net = from_onnx(zoo.atari_policy(8, 16, 40, 32, actions=4))
    fwd = EpisodeForward(net)
    rng = np.random.default_rng(8)
    f = rng.random(net.input_shape, dtype=np.float32)
    T = 50
    for t in range(T):
        if t % 10 == 5:
            f = f.copy()
            f[0, 0, 10:12, 10:12] += 0.5
        fwd.step(f)
    chans = [net.input_shape[1]] + [layer.out_shape[2] for layer in net.convs]
    levels = len(chans)
    nodes_after_first = fwd.node_count() - sum(len(a) for a in fwd.all_pix[1:])
    bound = sum(len(p) * 4 * (1 + c) for rec in fwd.records[1:] for (p, _), c in zip(rec, chans))
    assert fwd.memory_bytes() <= bound + T * 4 * net.fc0_out + 1024 * levels
    dense_copy = T * sum(np.prod(layer.out_shape) * 4 for layer in net.convs)
    assert nodes_after_first > 0 and fwd.memory_bytes() < dense_copy / 20
