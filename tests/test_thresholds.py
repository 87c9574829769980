"""Approximate mode: input and per-layer thresholds keep the last propagated value as the
reference, so the error stays bounded over time instead of drifting."""
import json

import numpy as np
import pytest
from onnx_helpers import make_model, node

import reuserun
from reuserun import zoo


def camera_like(n, size=64, seed=0, noise=0.004):
    """A static texture with per-frame sensor noise and one moving square."""
    rng = np.random.default_rng(seed)
    bg = rng.random((1, 3, size, size), dtype=np.float32)
    for t in range(n):
        f = bg + np.float32(noise) * rng.standard_normal(bg.shape).astype(np.float32)
        y = 8 + (t % 40)
        f[0, :, y:y + 8, 20:28] = 0.9
        yield np.clip(f, 0, 1).astype(np.float32)


def test_input_threshold_error_is_bounded_and_does_not_drift():
    model = zoo.unet_like(64)
    dense = reuserun.InferenceSession(model, policy="dense")
    exact = reuserun.InferenceSession(model)
    clean = reuserun.InferenceSession(model)
    approx = reuserun.InferenceSession(model, threshold=0.02)
    errs, fracs, exact_fracs, clean_fracs = [], [], [], []
    for f, g in zip(camera_like(300), camera_like(300, noise=0.0)):
        ref = dense.run(None, {"images": f})[0]
        out = approx.run(None, {"images": f})[0]
        exact.run(None, {"images": f})
        clean.run(None, {"images": g})
        errs.append(float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-6)))
        fracs.append(approx.stats["mac_fraction"])
        exact_fracs.append(exact.stats["mac_fraction"])
        clean_fracs.append(clean.stats["mac_fraction"])
    # sensor noise defeats exact reuse; under the threshold the work is about what the moving
    # square alone costs on a noise-free clip
    assert np.mean(exact_fracs[1:]) > 0.95
    assert np.mean(fracs[1:]) < min(0.9, np.mean(clean_fracs[1:]) + 0.1)
    first, last = np.mean(errs[1:100]), np.mean(errs[200:])
    assert last < 2 * first + 0.02  # bounded: no accumulation over time


def test_input_reference_is_last_propagated_value():
    model = zoo.unet_like(64)
    s = reuserun.InferenceSession(model, threshold=0.05)
    f = next(camera_like(1))
    s.run(None, {"images": f})
    # creep by less than the threshold per frame: compared with the previous frame nothing ever
    # changes, compared with the last propagated value the creep crosses the threshold at 0.06
    changed = []
    for k in range(1, 6):
        s.run(None, {"images": f + np.float32(0.02 * k)})
        changed.append(s.stats["changed_fraction"])
    assert changed[:2] == [0.0, 0.0] and changed[2] > 0.9 and changed[3:] == [0.0, 0.0]
    ref = s.state()["references"]["images"]
    assert np.abs(ref - (f + np.float32(0.06))).max() < 1e-6


def test_input_reference_is_kept_per_element():
    """A pixel that changed in one channel takes only that channel: its other channels, moved
    by less than the threshold, keep their reference, in the reference frame and in the cache."""
    model = zoo.unet_like(64)
    s = reuserun.InferenceSession(model, threshold=0.05)
    f = next(camera_like(1))
    s.run(None, {"images": f})
    g = f.copy()
    g[0, 0] += np.float32(0.2)   # beyond the threshold
    g[0, 1] += np.float32(0.03)  # within it
    s.run(None, {"images": g})
    assert s.stats["changed_fraction"] == 1.0
    for ref in (s.state()["references"]["images"], s.state()["tensors"]["images"]):
        assert np.array_equal(ref[0, 0], g[0, 0]) and np.array_equal(ref[0, 1:], f[0, 1:])


def test_layer_thresholds_cut_work_and_are_validated(tmp_path):
    model = zoo.mobilenet_v3_like(64)
    exact = reuserun.InferenceSession(model)
    path = tmp_path / "thr.json"
    path.write_text(json.dumps({"default": 0.05}))
    approx = reuserun.InferenceSession(model, layer_thresholds=str(path))
    dense = reuserun.InferenceSession(model, policy="dense")
    fr = list(camera_like(12, noise=0.0))
    worst = 0.0
    for f in fr:
        ref = dense.run(None, {"images": f})[0]
        exact.run(None, {"images": f})
        out = approx.run(None, {"images": f})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    assert approx.stats["mac_fraction"] < exact.stats["mac_fraction"]
    assert worst < 0.5 * float(np.abs(ref).max())
    with pytest.raises(ValueError, match="no layer"):
        reuserun.InferenceSession(model, layer_thresholds={"no_such_layer": 0.1})
    with pytest.raises(ValueError, match=">= 0"):
        reuserun.InferenceSession(model, layer_thresholds={"default": -1})


def test_tune_meets_its_budget_and_writes_a_loadable_file(tmp_path):
    from reuserun import cli
    from reuserun.tune import evaluate

    model_path = tmp_path / "m.onnx"
    model_path.write_bytes(zoo.resnet_like(64, width=8).SerializeToString())
    out = tmp_path / "t.json"
    assert cli.main(["tune", str(model_path), "--frames", "6", "--max-error", "0.05", "--size", "64",
                     "--out", str(out), "--no-progress"]) == 0
    spec = json.loads(out.read_text())
    assert spec["max_rel_l2"] <= 0.05
    sess = reuserun.InferenceSession(str(model_path), layer_thresholds=str(out))
    assert sess.threshold == spec["threshold"]
    # the budget holds when measured independently, on the same clip
    from reuserun.streams import frames_from_spec
    frames = frames_from_spec("synthetic", (1, 3, 64, 64), 6)
    dense = reuserun.InferenceSession(str(model_path), policy="dense")
    refs = [dense.run(None, {"images": f}) for f in frames]
    err, _, _ = evaluate(str(model_path), frames, refs, spec["threshold"], spec["layer_thresholds"])
    assert err <= 0.05


def test_frame_error_is_the_worst_output():
    from reuserun.tune import frame_error
    ref = [np.array([[3.0, 4.0]], np.float32), np.ones((1, 2, 2, 2), np.float32)]
    out = [np.array([[3.0, 4.5]], np.float32), np.full((1, 2, 2, 2), 1.2, np.float32)]
    err, agree = frame_error(out, ref)
    assert np.isclose(err, 0.2) and agree == [1]  # 0.5 / 5 for the scores, 0.2 for the map
    out[0] = np.array([[5.0, 4.0]], np.float32)
    assert frame_error(out, ref) == (pytest.approx(0.4), [0])


def test_tune_holds_out_the_last_quarter():
    """From 8 frames on, tuning fits the first three quarters and reports the worst error of the
    rest, run as the clip plays on."""
    from reuserun.streams import frames_from_spec
    from reuserun.tune import evaluate, tune
    model = zoo.resnet_like(64, width=8)
    frames = frames_from_spec("synthetic", (1, 3, 64, 64), 8)
    res = tune(model, frames, 0.05)
    dense = reuserun.InferenceSession(model, policy="dense")
    refs = [dense.run(None, {"images": f}) for f in frames]
    assert res.max_rel_l2 == evaluate(model, frames[:6], refs[:6], res.threshold, res.layer_thresholds)[0] <= 0.05
    held = evaluate(model, frames, refs, res.threshold, res.layer_thresholds, start=6)[0]
    assert res.holdout_rel_l2 == held
    assert json.loads(res.to_json())["holdout_rel_l2"] == held
    # the held-out frames do not steer the tuning
    rng = np.random.default_rng(3)
    other = tune(model, frames[:6] + [rng.random((1, 3, 64, 64), dtype=np.float32) for _ in range(2)], 0.05)
    assert (other.threshold, other.layer_thresholds) == (res.threshold, res.layer_thresholds)


def test_no_drift_over_thousands_of_frames():
    """A slowly drifting, noisy scene for 5000 frames: the error at the end is no larger than
    early on, and a scene cut is taken in full."""
    from test_session import small_cnn
    model = small_cnn(32)
    dense = reuserun.InferenceSession(model, policy="dense")
    approx = reuserun.InferenceSession(model, threshold=0.03)
    rng = np.random.default_rng(1)
    bg = rng.random((1, 3, 32, 32), dtype=np.float32)
    errs = []
    for t in range(5000):
        f = bg + np.float32(0.01) * rng.standard_normal(bg.shape).astype(np.float32)
        f += np.float32(0.02 * np.sin(t / 50.0))  # a slow global drift, well past the threshold
        ref = dense.run(None, {"x": f})[0]
        out = approx.run(None, {"x": f})[0]
        errs.append(float(np.linalg.norm(out - ref) / np.linalg.norm(ref)))
    early, late = np.mean(errs[400:600]), np.mean(errs[4900:5000])
    assert late <= 1.5 * early + 1e-3, (early, late)
    cut = rng.random((1, 3, 32, 32), dtype=np.float32)
    out = approx.run(None, {"x": cut})[0]
    assert approx.stats["changed_fraction"] > 0.9
    assert np.linalg.norm(out - dense.run(None, {"x": cut})[0]) / np.linalg.norm(out) < 0.05
    approx.reset()
    assert approx.run(None, {"x": cut})[0].tobytes() == dense.run(None, {"x": cut})[0].tobytes()


@pytest.mark.parametrize("C", [8, 32, 128])
def test_a_pool_under_a_layer_threshold_passes_on_only_what_moved(C):
    """A global pool under its own threshold keeps its last propagated value until the pooled
    value moves by more than the threshold, and then the layer after it sees the change."""
    w = np.random.default_rng(C).standard_normal((C, 1, 1, 1)).astype(np.float32)
    fc = np.random.default_rng(C + 1).standard_normal((3, C)).astype(np.float32)
    model = make_model([node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
                        node("GlobalAveragePool", ["c"], ["g"], name="pool"),
                        node("Flatten", ["g"], ["f"]), node("Gemm", ["f", "fc"], ["y"], transB=1)],
                       [("x", [1, 1, 8, 8])], ["y"], [("w", w), ("fc", fc)])
    sess = reuserun.InferenceSession(model, layer_thresholds={"pool": 0.01}, threads=1)
    x = np.zeros((1, 1, 8, 8), np.float32)
    y0 = sess.run(None, {"x": x})[0]
    x[0, 0, 0, 0] = 0.1  # moves each pooled value by |w| * 0.1 / 64, under 0.01 for every channel
    assert np.abs(w).max() * 0.1 / 64 < 0.01
    assert sess.run(None, {"x": x})[0].tobytes() == y0.tobytes()
    x[0, 0, :4] = 1.0  # moves them by |w| / 2: over the threshold wherever |w| > 0.02
    y2 = sess.run(None, {"x": x})[0]
    want = reuserun.InferenceSession(model, policy="dense").run(None, {"x": x})[0]
    assert y2.tobytes() != y0.tobytes()
    np.testing.assert_allclose(y2, want, atol=0.01 * np.abs(fc).sum(axis=1).max())
