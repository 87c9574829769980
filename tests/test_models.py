"""Whole models: PyTorch exports and the built-in zoo, under every policy, on moving content.

Every policy must be bit-identical to reuserun's dense run and within float tolerance of
onnxruntime."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx_helpers import run_ort

import reuserun
from reuserun import sources, zoo

POLICIES = ["auto", "tiles", "rects", "rect"]


def ort_outputs(model, name, frame):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {name: frame})


def check_model(model, shape, scenario="objects", frames=4, tol=1e-4):
    name = model.graph.input[0].name
    stream = list(sources.synthetic_stream(shape, scenario, frames=frames, seed=1))
    dense = reuserun.InferenceSession(model, policy="dense")
    sessions = [reuserun.InferenceSession(model, policy=p) for p in POLICIES]
    fractions = []
    for i, f in enumerate(stream):
        ref = dense.run(None, {name: f})
        if i in (0, frames - 1):
            for a, b in zip(ort_outputs(model, name, f), ref):
                scale = max(1.0, float(np.abs(a).max()))
                np.testing.assert_allclose(b, a, rtol=tol, atol=tol * scale)
        for s in sessions:
            for a, b in zip(s.run(None, {name: f}), ref):
                assert a.tobytes() == b.tobytes(), (s.policy_name, i)
        fractions.append(sessions[0].stats["mac_fraction"])
    return fractions


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "mobilenetv3", "efficientnet", "unet", "yolov5", "yolov4",
                                  "dbnet", "hrnet"])
@pytest.mark.torch
@pytest.mark.slow
def test_torch_export(name):
    torch_models = pytest.importorskip("torch_models")
    module, shape = torch_models.build(name)
    model = torch_models.export(module, shape)
    fractions = check_model(model, shape)
    assert fractions[0] == 1.0  # the first frame is dense


@pytest.mark.parametrize("name", zoo.IMAGE_MODELS)
def test_zoo_models(name):
    model = zoo.MODELS[name](96)
    check_model(model, (1, 3, 96, 96), frames=3)


def test_kws_on_sliding_audio_windows():
    from reuserun import streams
    model = zoo.kws_1d(4000)
    frames = streams.frames_from_spec("synthetic-audio", (1, 1, 4000), 4)
    dense = reuserun.InferenceSession(model, policy="dense")
    sess = reuserun.InferenceSession(model)
    ref = run_ort(model, {"audio": frames[-1]})["logits"]
    for f in frames:
        out = sess.run(None, {"audio": f})[0]
        assert out.tobytes() == dense.run(None, {"audio": f})[0].tobytes()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert sess.stats["shift"] == (0, 160) and sess.stats["mac_fraction"] < 0.1


def test_atari_policy_reuses():
    model = zoo.atari_policy(20, 40, 53, 40)
    fr = check_model(model, (1, 1, 53, 40), scenario="object", frames=4)
    assert fr[0] == 1.0 and max(fr[1:]) < 0.6


def stacked_frames(k, size, n, scenario="object"):
    frames = list(sources.synthetic_stream((1, 1, size, size), scenario, frames=n + k, seed=3))
    return [np.concatenate(frames[i:i + k], axis=1) for i in range(n)]


@pytest.mark.parametrize("policy", POLICIES)
def test_frame_stack_reuse_is_exact(policy):
    model = zoo.nature_dqn(frames=4, size=84)
    stack = reuserun.InferenceSession(model, policy=policy, frame_stack=True)
    plain = reuserun.InferenceSession(model, policy=policy)
    dense = reuserun.InferenceSession(model, policy="dense", frame_stack=True)
    assert "frames" in stack.frame_stack_inputs and not plain.frame_stack_inputs
    frames = stacked_frames(4, 84, 6)
    # a non-shifting edit and a repeated stack too
    frames += [frames[-1].copy(), frames[-1] + np.float32(0.5) * (np.arange(84) == 40)[None, None, None, :]]
    for i, x in enumerate(frames):
        x = np.ascontiguousarray(x, np.float32)
        ref = dense.run(None, {"frames": x})[0]
        assert stack.run(None, {"frames": x})[0].tobytes() == ref.tobytes(), i
        np.testing.assert_allclose(plain.run(None, {"frames": x})[0], ref, rtol=1e-4, atol=1e-4)
        if i in (0, 5):
            np.testing.assert_allclose(ort_outputs(model, "frames", x)[0], ref, rtol=1e-4, atol=1e-4)
    # per-channel partials cost less than recomputing the whole stack where any slot changed
    assert stack.stats["mac_fraction"] <= plain.stats["mac_fraction"]


def test_frame_stack_declared_and_detected():
    model = zoo.nature_dqn(frames=2, size=84)
    assert not reuserun.InferenceSession(model).frame_stack_inputs  # not guessed from the shape
    assert reuserun.InferenceSession(model, frame_stack=True).frame_stack_inputs == {"frames"}
    model.metadata_props.add(key="reuserun.frame_stack", value="true")
    assert reuserun.InferenceSession(model).frame_stack_inputs == {"frames"}
    assert not reuserun.InferenceSession(model, frame_stack=False).frame_stack_inputs


@pytest.mark.torch
@pytest.mark.slow
def test_trained_detector():
    """The trained CenterNet-style detector that bench/approx.py uses (bench/assets), and the tool
    that trains it: a short run exports a model that reuserun runs like onnxruntime."""
    from pathlib import Path

    import onnx
    model = onnx.load(str(Path(__file__).resolve().parents[1] / "bench" / "assets" / "detector.onnx"))
    check_model(model, (1, 3, 320, 320), frames=3)
    train_detector = pytest.importorskip("train_detector")
    net = train_detector.train(steps=2, size=64, batch_size=2, seed=0, log=lambda *_: None)
    small = train_detector.export(net, (1, 3, 64, 64))
    assert [n.name for n in small.graph.node] == [n.name for n in model.graph.node]
    check_model(small, (1, 3, 64, 64), frames=3)
