"""The built-in models, the synthetic streams and the torch exports used by tests and benches."""
import importlib.util
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

try:
    from reuserun import sources, zoo
except ImportError:  # the package's compiled parts are not built: load the two pure modules alone
    def _load(name):
        spec = importlib.util.spec_from_file_location(f"_rr_{name}", ROOT / "reuserun" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    sources, zoo = _load("sources"), _load("zoo")

# Small sizes keep this file fast; the layouts are the same at 320.
ZOO_CASES = {
    "yolo": lambda: zoo.yolo_like(128),
    "yolo_leaky": lambda: zoo.yolo_like(64, act="leaky"),
    "resnet": lambda: zoo.resnet_like(128),
    "mobilenet": lambda: zoo.mobilenet_v3_like(128),
    "unet": lambda: zoo.unet_like(128),
    "atari": lambda: zoo.atari_policy(8, 16, 53, 40, 4),
}


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.mark.parametrize("name", ZOO_CASES)
def test_zoo_model_runs(name):
    model = ZOO_CASES[name]()
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    assert inp.name == ("frame" if name == "atari" else "images")
    x = next(sources.synthetic_stream(shape, "objects", frames=1))
    outs = run_ort(model, x)
    for y in outs:
        assert np.isfinite(y).all()
        assert 1e-3 < np.sqrt(np.mean(y**2)) < 20  # neither dead nor exploding
    assert zoo.macs(model) > 0


def test_zoo_layouts():
    ops = lambda m: {n.op_type for n in m.graph.node}
    yolo = zoo.default_model(64)
    assert {"BatchNormalization", "Sigmoid", "Mul", "MaxPool", "Resize", "Concat"} <= ops(yolo)
    assert [o.type.tensor_type.shape.dim[2].dim_value for o in yolo.graph.output] == [8, 4, 2]
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool"} <= ops(zoo.mobilenet_v3_like(64))
    assert {"ConvTranspose", "Resize", "Sigmoid"} <= ops(zoo.unet_like(64))
    assert [n.op_type for n in zoo.atari_policy(2, 3, 9, 9, 2).graph.node] == [
        "Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm", "Softmax"]
    assert set(zoo.MODELS) == {"yolo", "resnet", "mobilenet", "unet", "kws"}
    assert [n.op_type for n in zoo.kws_1d(1600).graph.node].count("Conv") == 5
    # Same seed, same weights.
    assert zoo.resnet_like(64).SerializeToString() == zoo.resnet_like(64).SerializeToString()


def test_no_torch_in_package():
    for name in ("zoo.py", "sources.py"):
        text = (ROOT / "reuserun" / name).read_text()
        assert "import torch" not in text and "from torch" not in text


def test_macs_by_hand():
    # Conv1: 1*9 MACs per output, 8 x 7 x 7 outputs; conv2: 8*9 per output, 16 x 5 x 5 outputs;
    # Gemm: 16*5*5 inputs x 3 actions.
    expected = 9 * 8 * 7 * 7 + 8 * 9 * 16 * 5 * 5 + 16 * 5 * 5 * 3
    assert zoo.macs(zoo.atari_policy(8, 16, 9, 9, 3)) == expected
    # ResNet-18's published 1.81 GMAC at 224 (half width: a quarter).
    assert abs(zoo.macs(zoo.resnet_like(224, width=64)) - 1.814e9) < 0.01e9
    # ConvTranspose 2x2 s2 counted by its input: the unet has one.
    assert zoo.macs(zoo.unet_like(64)) > 0


# --- synthetic streams ----------------------------------------------------------------------

SHAPE = (1, 3, 96, 128)


def frames(scenario, shape=SHAPE, n=12, seed=0):
    return list(sources.synthetic_stream(shape, scenario, frames=n, seed=seed))


@pytest.mark.parametrize("scenario", sources.SCENARIOS + ("default",))
def test_stream_format(scenario):
    fs = frames(scenario)
    assert len(fs) == 12
    for f in fs:
        assert f.shape == SHAPE and f.dtype == np.float32 and f.flags.c_contiguous
        assert 0.0 <= f.min() and f.max() <= 1.0
    assert all(a is not b and not np.shares_memory(a, b) for a, b in zip(fs, fs[1:]))
    # Deterministic from the seed, different for another seed (still: same background too).
    again = frames(scenario)
    assert all(np.array_equal(a, b) for a, b in zip(fs, again))
    assert not np.array_equal(fs[0], frames(scenario, seed=1)[0])


EXPECTED_CHANGE = {  # per-frame changed fraction: (low, high)
    "still": (0.0, 0.0),
    "object": (0.005, 0.03),
    "objects": (0.01, 0.08),
    "scroll": (0.08, 0.12),
    "noise": (0.0002, 0.003),
    "full": (0.999, 1.0),
}


@pytest.mark.parametrize("scenario", sources.SCENARIOS)
def test_stream_change_structure(scenario):
    lo, hi = EXPECTED_CHANGE[scenario]
    fs = frames(scenario, n=20)
    for a, b in zip(fs, fs[1:]):
        assert lo <= sources.changed_fraction(a, b) <= hi
        # Unchanged pixels are bit-identical, not merely close.
        same = (a == b).all(axis=1)
        assert np.array_equal(a.view(np.uint32)[:, :, same[0]], b.view(np.uint32)[:, :, same[0]])


def test_objects_are_separate():
    # Each object stays in its own cell of a 2x3 grid, so the changes form far-apart groups.
    fs = frames("objects", n=3)
    changed = (fs[1] != fs[2]).any(axis=1)[0]
    ys, xs = np.nonzero(changed)
    cells = {(y // (SHAPE[2] // 2), x // (SHAPE[3] // 3)) for y, x in zip(ys, xs)}
    assert len(cells) == 5  # five of the 2x3 grid's cells, one object each


def test_first_frame_is_background_plus_objects():
    still = frames("still", n=1)[0]
    first = frames("object", n=1)[0]
    diff = (still != first).any(axis=1).mean()
    assert 0.005 < diff < 0.02  # only the object's square differs from the background


def test_grayscale_and_batch():
    seq = sources.frame_sequence((1, 1, 105, 80), "object", frames=5)
    assert seq.shape == (5, 1, 1, 105, 80) and seq.dtype == np.float32
    assert 0.005 < sources.changed_fraction(seq[0], seq[1]) < 0.03
    b = frames("noise", shape=(2, 4, 32, 40), n=2)
    assert b[0].shape == (2, 4, 32, 40) and np.array_equal(b[1][0], b[1][1])
    with pytest.raises(ValueError):
        frames("nope")
    with pytest.raises(ValueError):
        sources.changed_fraction(b[0], b[0][0])


def test_endless_stream():
    it = sources.synthetic_stream((1, 1, 16, 16), "object", frames=None)
    assert len([next(it) for _ in range(50)]) == 50


# --- torch exports --------------------------------------------------------------------------

@pytest.mark.torch
def test_torch_models_export_and_match():
    torch = pytest.importorskip("torch")
    import torch_models as tm

    for name in tm.TORCH_MODELS:
        module, shape = tm.build(name)
        model = tm.export(module, shape)
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == 17
        x = tm.sample_input(shape, seed=1)
        with torch.no_grad():
            ref = module(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = run_ort(model, x.numpy())
        assert len(got) == len(ref), name
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
            assert r.std() > 1e-3, f"{name}: output is nearly constant"
