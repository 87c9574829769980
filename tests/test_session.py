"""The onnxruntime-compatible surface: API, stats, reuse really happening, and bad input."""
import numpy as np
import pytest
from onnx_helpers import make_model, node, rand

import reuserun
from reuserun import sources, zoo


@pytest.fixture(scope="module")
def model():
    return zoo.default_model(64)


def frames(n=3, scenario="object", size=64):
    return list(sources.synthetic_stream((1, 3, size, size), scenario, frames=n, seed=2))


def snapshot(sess):
    """Every cached buffer and mask, to prove a rejected frame changed nothing."""
    state = sess.state()
    out = {name: (np.array(v), np.array(state["masks"].get(name, ()))) for name, v in state["tensors"].items()}
    out.update({"reference " + name: (np.array(v), ()) for name, v in state["references"].items()})
    return out, state["fresh"]


def assert_same_snapshot(a, b):
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        for x, y in zip(a[0][k], b[0][k]):
            if isinstance(x, np.ndarray):
                assert x.tobytes() == y.tobytes(), k
            else:
                assert x == y, k


def test_api_matches_onnxruntime_shape(model):
    s = reuserun.InferenceSession(model)
    [inp] = s.get_inputs()
    assert inp.name == "images" and inp.shape == [1, 3, 64, 64] and inp.type == "tensor(float)"
    outs = s.get_outputs()
    assert len(outs) == 3 and all(o.type == "tensor(float)" for o in outs)
    f = frames(1)[0]
    res = s.run(None, {"images": f})
    assert [r.shape for r in res] == [tuple(o.shape) for o in outs]
    one = s.run([outs[1].name], {"images": f})
    assert len(one) == 1 and one[0].tobytes() == res[1].tobytes()
    assert isinstance(reuserun.openmp_enabled(), bool)


def small_cnn(size=64):
    ws = [("w1", rand(8, 3, 3, 3, seed=1)), ("w2", rand(16, 8, 3, 3, seed=2)), ("w3", rand(16, 16, 3, 3, seed=3))]
    nodes = [node("Conv", ["x", "w1"], ["a"], pads=[1] * 4), node("Relu", ["a"], ["b"]),
             node("Conv", ["b", "w2"], ["c"], pads=[1] * 4, strides=[2, 2]), node("Relu", ["c"], ["d"]),
             node("MaxPool", ["d"], ["e"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Conv", ["e", "w3"], ["y"], pads=[1] * 4)]
    return make_model(nodes, [("x", (1, 3, size, size))], [("y", (1, 16, size // 4, size // 4))], ws)


def test_reuse_really_happens():
    s = reuserun.InferenceSession(small_cnn(96))
    f = frames(1, size=96)[0]
    s.run(None, {"x": f})
    assert s.stats["mac_fraction"] == 1.0
    s.run(None, {"x": f.copy()})
    assert s.stats["mac_fraction"] == 0.0 and s.stats["changed_fraction"] == 0.0
    g = f.copy()
    g[0, :, 40:43, 40:43] += 0.5
    s.run(None, {"x": g})
    assert 0 < s.stats["mac_fraction"] < 0.05
    assert s.stats["changed_fraction"] == pytest.approx(9 / 96 ** 2)
    assert {"name", "op", "computed", "total"} <= set(s.stats["layers"][0])


def test_frame_that_changed_everywhere_runs_dense():
    """An exact frame that changed every input position runs the dense path (no per-step
    planning), with the dense run's bits; one that changed in part still plans."""
    model = small_cnn(96)
    s, dense = reuserun.InferenceSession(model), reuserun.InferenceSession(model, policy="dense")
    f = frames(1, size=96)[0]
    s.run(None, {"x": f})
    g = f + np.float32(1.0)  # every position changed
    h = g.copy()
    h[0, :, :10] += np.float32(1.0)  # the top rows changed
    for frame, everywhere in ((g, True), (h, False)):
        out = s.run(None, {"x": frame})[0]
        assert s.stats["full"] is everywhere
        assert out.tobytes() == dense.run(None, {"x": frame})[0].tobytes()


def test_reset_makes_next_frame_dense(model):
    s = reuserun.InferenceSession(model)
    f = frames(1)[0]
    s.run(None, {"images": f})
    s.reset()
    s.run(None, {"images": f})
    assert s.stats["mac_fraction"] == 1.0


def test_sessions_share_packed_weights(model):
    a = reuserun.InferenceSession(model)
    b = reuserun.InferenceSession(model, policy="rect")
    assert a.graph is b.graph  # one compiled model: its graph and packed weights
    f = frames(1)[0]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.run(None, {"images": f}), b.run(None, {"images": f})))


def test_dynamic_dims_bound_by_first_frame_or_input_shape():
    w = rand(4, 3, 3, 3, seed=1)
    m = make_model([node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [("x", ["N", 3, "H", "W"])], [("y", ["N", 4, "H", "W"])], [("w", w)])
    s = reuserun.InferenceSession(m)
    assert s.get_inputs()[0].shape == ["N", 3, "H", "W"]
    x = rand(1, 3, 10, 12, seed=2)
    assert s.run(None, {"x": x})[0].shape == (1, 4, 10, 12)
    assert s.get_inputs()[0].shape == [1, 3, 10, 12]
    with pytest.raises(reuserun.InputError, match="shape"):
        s.run(None, {"x": rand(1, 3, 10, 14)})
    s2 = reuserun.InferenceSession(m, input_shape=(1, 3, 8, 8))
    assert s2.get_inputs()[0].shape == [1, 3, 8, 8]


@pytest.mark.parametrize("bad, match", [
    ({"nope": None}, "unknown input"),
    ({}, "missing input"),
    ({"images": np.zeros((1, 3, 64, 64), np.float64)}, "float32"),
    ({"images": np.zeros((1, 3, 32, 32), np.float32)}, "shape"),
    ({"images": [[0.0]]}, "numpy array"),
])
def test_bad_feeds_rejected_without_touching_state(model, bad, match):
    s = reuserun.InferenceSession(model)
    fs = frames(2)
    s.run(None, {"images": fs[0]})
    before = snapshot(s)
    with pytest.raises(reuserun.InputError, match=match):
        s.run(None, bad)
    assert_same_snapshot(before, snapshot(s))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_frame_rejected_and_stream_continues(model, value):
    s = reuserun.InferenceSession(model)
    ref = reuserun.InferenceSession(model, policy="dense")
    fs = frames(3)
    s.run(None, {"images": fs[0]})
    before = snapshot(s)
    bad = fs[1].copy()
    bad[0, 1, 10, 10] = value
    with pytest.raises(reuserun.InputError, match="NaN or Inf"):
        s.run(None, {"images": bad})
    assert_same_snapshot(before, snapshot(s))
    out = s.run(None, {"images": fs[2]})
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out, ref.run(None, {"images": fs[2]})))


def test_non_finite_first_frame_rejected(model):
    s = reuserun.InferenceSession(model)
    bad = frames(1)[0]
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(reuserun.InputError):
        s.run(None, {"images": bad})


def test_non_contiguous_and_read_only_frames_are_fine(model):
    s = reuserun.InferenceSession(model)
    ref = reuserun.InferenceSession(model, policy="dense")
    for f in frames(3):
        nhwc = np.ascontiguousarray(f.transpose(0, 2, 3, 1))
        view = nhwc.transpose(0, 3, 1, 2)  # same values, not C-contiguous
        assert not view.flags.c_contiguous
        view.flags.writeable = False
        out = s.run(None, {"images": view})
        assert all(a.tobytes() == b.tobytes() for a, b in zip(out, ref.run(None, {"images": f})))


def test_outputs_are_copies(model):
    s = reuserun.InferenceSession(model)
    f = frames(1)[0]
    a = s.run(None, {"images": f})
    a[0][...] = 123.0
    b = s.run(None, {"images": f})
    assert not np.any(b[0] == 123.0)


def test_unknown_output_name(model):
    s = reuserun.InferenceSession(model)
    with pytest.raises(reuserun.InputError, match="unknown output"):
        s.run(["nope"], {"images": frames(1)[0]})


def test_bad_models():
    good = zoo.default_model(64).SerializeToString()
    with pytest.raises(reuserun.ModelError):
        reuserun.InferenceSession(good[: len(good) // 3])
    with pytest.raises(reuserun.ModelError):
        reuserun.InferenceSession(b"not an onnx model at all")
    with pytest.raises(reuserun.ModelError, match="not found"):
        reuserun.InferenceSession("/nonexistent/model.onnx")


def test_unsupported_ops_listed_at_load():
    m = make_model([node("Conv", ["x", "w"], ["c"], name="conv0"),
                    node("TopK", ["c", "k"], ["v", "i"], name="topk0", axis=1),
                    node("RandomNormalLike", ["v"], ["e"], name="einsum0"),
                    node("RandomNormalLike", ["e"], ["y"], name="einsum1")],
                   [("x", (1, 3, 8, 8))], [("y", (1, 2, 6, 6))],
                   [("w", rand(4, 3, 3, 3)), ("k", np.array([2], np.int64))])
    with pytest.raises(reuserun.UnsupportedOpsError) as e:
        reuserun.InferenceSession(m, strict=True)
    msg = str(e.value)
    for part in ("TopK", "topk0", "RandomNormalLike", "einsum0", "einsum1", "opset 17", "strict"):
        assert part in msg
    # without strict, what no partition can take runs whole in onnxruntime, said in a warning
    with pytest.warns(UserWarning, match="whole in onnxruntime.*RandomNormalLike x2") as w:
        sess = reuserun.InferenceSession(m)
    assert "TopK" not in str(w[0].message)
    out = sess.run(None, {"x": rand(1, 3, 8, 8)})[0]
    assert out.shape == (1, 2, 6, 6) and sess.stats["backend"] == "onnxruntime"
    with pytest.raises(reuserun.InputError, match="whole in onnxruntime"):
        sess.run_variant(None, {"x": rand(1, 3, 8, 8)})


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="policy"):
        reuserun.InferenceSession(model, policy="fastest")
    with pytest.raises(ValueError, match="threshold"):
        reuserun.InferenceSession(model, threshold=-1)
    with pytest.raises(reuserun.UnsupportedOpsError.__base__, match="batch of 2"):
        reuserun.InferenceSession(model, input_shape=(2, 3, 64, 64), strict=True)
    with pytest.raises(ValueError, match="batch must be"):
        reuserun.InferenceSession(model, batch="split")


def test_dense_backend_onnxruntime_takes_frames_that_changed_everywhere(model):
    """With dense_backend="onnxruntime", a frame changed on most of its pixels runs in the
    embedded onnxruntime session; the frame after it that changes less is computed by reuserun
    again (bit-identical to dense), and so is a variant; a rejected frame in between changes
    nothing."""
    from reuserun.runtime.ort_backend import ort_session
    with pytest.raises(ValueError, match="dense_backend"):
        reuserun.InferenceSession(model, dense_backend="tensorrt")
    s = reuserun.InferenceSession(model, threads=1, dense_backend="onnxruntime")
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    ort = ort_session(model.SerializeToString(), 1)
    rng = np.random.default_rng(3)
    x = rng.random((1, 3, 64, 64), dtype=np.float32)

    def step(x, backend):
        out = s.run(None, {"images": x})
        assert s.stats["backend"] == backend
        want = ort.run(None, {"images": x}) if backend == "onnxruntime" else dense.run(None, {"images": x})
        for a, b in zip(out, want):
            assert a.tobytes() == b.tobytes()
        for a, b in zip(out, dense.run(None, {"images": x})):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

    step(x, "reuserun")  # the first frame builds the cache
    for _ in range(2):
        x = rng.random((1, 3, 64, 64), dtype=np.float32)
        step(x, "onnxruntime")
        assert s.stats["mac_fraction"] == pytest.approx(1.0)
    bad = x.copy()
    bad[0, 0, 5, 5] = np.nan
    before = snapshot(s)
    with pytest.raises(reuserun.InputError, match="NaN"):
        s.run(None, {"images": bad})
    assert_same_snapshot(before, snapshot(s))
    x = x.copy()
    x[..., 10:20, 30:40] += 0.5
    step(x, "reuserun")  # catches up with a dense run of its own
    x = x.copy()
    x[..., 40:44, 8:12] -= 0.5
    step(x, "reuserun")
    assert s.stats["mac_fraction"] < 0.9  # and reuses from here on
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    s.run(None, {"images": x})
    assert s.stats["backend"] == "onnxruntime"
    v = x.copy()  # a variant of the delegated frame: the cache must catch up with it first
    v[..., 30:34, 30:34] = 0.0
    want = [o.copy() for o in dense.run(None, {"images": v})]
    for variant in (s.fork().run_variant(None, {"images": v}), s.run_variant(None, {"images": v})):
        for a, b in zip(variant, want):
            assert a.tobytes() == b.tobytes()


def test_dense_backend_onnxruntime_takes_small_changes_that_reach_most_macs():
    """MobileNetV3's squeeze-excite vectors carry any change to 80% of its MACs: after one such
    frame, frames changing at least half as much go to onnxruntime; a still frame catches the
    cache up, and the next change is measured by reuserun again."""
    m = zoo.mobilenet_v3_like(64)
    s = reuserun.InferenceSession(m, threads=1, dense_backend="onnxruntime")
    dense = reuserun.InferenceSession(m, policy="dense", threads=1)
    stream = [np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)]
    for y0, x0, size in [(10, 10, 6), (30, 30, 6), (0, 0, 0), (50, 5, 1), (20, 40, 6), (5, 50, 8)]:
        stream.append(stream[-1].copy())  # each frame an edit of the one before (size 0: still)
        stream[-1][..., y0:y0 + size, x0:x0 + size] += 0.5

    seen = []
    for x in stream:
        out, want = s.run(None, {"images": x}), dense.run(None, {"images": x})
        seen.append((s.stats["backend"], s.stats["mac_fraction"] >= 0.75))
        for a, b in zip(out, want):
            if seen[-1][0] == "reuserun":
                assert a.tobytes() == b.tobytes()
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert seen == [("reuserun", True), ("reuserun", True), ("onnxruntime", True), ("reuserun", True),
                    ("reuserun", True), ("onnxruntime", True), ("onnxruntime", True)]
    # where a small change stays small (a U-Net at 128 px: 17-27% of the MACs), reuserun keeps it
    u = reuserun.InferenceSession(zoo.unet_like(128), threads=1, dense_backend="onnxruntime")
    x = np.random.default_rng(1).random((1, 3, 128, 128), dtype=np.float32)
    u.run(None, {"images": x})
    for k in range(3):
        x = x.copy()
        x[..., 10 + 20 * k:14 + 20 * k, 10:14] += 0.5
        u.run(None, {"images": x})
        assert u.stats["backend"] == "reuserun" and u.stats["mac_fraction"] < 0.5


def test_still_frames_between_changes(model):
    s = reuserun.InferenceSession(model)
    ref = reuserun.InferenceSession(model, policy="dense")
    a, b = frames(2, scenario="object")
    for f in (a, a, b, b, a, a, b):
        out = s.run(None, {"images": f})
        assert all(x.tobytes() == y.tobytes() for x, y in zip(out, ref.run(None, {"images": f})))


def test_fused_activation_survives_numpy_fallback():
    """Add -> Relu fuses; an Add that the kernels don't cover (a full-size constant operand) runs
    in numpy and must still apply the ReLU."""
    import onnxruntime as ort
    c = rand(1, 4, 6, 6, seed=5)
    m = make_model([node("Conv", ["x", "w"], ["a"], pads=[1] * 4), node("Add", ["a", "c"], ["b"]),
                    node("Relu", ["b"], ["y"])],
                   [("x", (1, 3, 6, 6))], [("y", (1, 4, 6, 6))], [("w", rand(4, 3, 3, 3, seed=6)), ("c", c)])
    s = reuserun.InferenceSession(m)
    assert any(step.node is not None and step.node.attrs.get("act") for step in s.program)
    x = rand(1, 3, 6, 6, seed=7)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = s.run(None, {"x": x})[0]
    assert got.min() >= 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_profiled_session_gives_the_same_bits_and_a_row_per_step():
    from reuserun import sources, zoo
    m = zoo.mobilenet_v3_like(64)
    frames = list(sources.synthetic_stream((1, 3, 64, 64), "objects", frames=4))
    plain = reuserun.InferenceSession(m)
    prof = reuserun.InferenceSession(m, profile=True)
    name = plain.get_inputs()[0].name
    for f in frames:
        for a, b in zip(plain.run(None, {name: f}), prof.run(None, {name: f})):
            assert a.tobytes() == b.tobytes()
    table = prof.profile()
    assert table["frames"] == 4 and len(table["steps"]) >= len(prof.stats["layers"]) > 0
    assert table["frame_ms"] >= table["steps_ms"] > 0
    with pytest.raises(ValueError, match="profile=True"):
        plain.profile()


def test_dense_choice_follows_measured_times():
    from reuserun.runtime.dense_choice import PROBE, WARMUP, DenseChoice
    d = DenseChoice()
    for _ in range(WARMUP):  # nothing measured: a large change measures it
        assert not d.dense(0.01) and d.dense(0.9)
        d.note(0.9, 0.010, full=True)
    assert not d.dense(0.9)                    # no incremental frame has cost that much yet
    d.note(0.2, 0.005, full=False, mac_fraction=0.9)
    assert d.wide_from == 0.2 and not d.dense(0.1)  # a fifth of the pixels reached 90% of the MACs
    d.note(0.2, 0.011, full=False, mac_fraction=0.9)
    assert d.dense(0.25)                       # ... and cost more than a dense frame
    d.reset()
    d.note(0.8, 0.012, full=False)             # slower than dense: 0.8 and up is heavy
    assert d.dense(0.85) and not d.dense(0.5)
    probes = [d.dense(0.9) for _ in range(2 * PROBE)]
    assert probes.count(False) == 2            # every PROBE-th heavy frame runs incrementally
    d.note(0.9, 0.005, full=False)             # ... and a fast one clears the mark
    assert not d.dense(0.9)
    d.note(0.7, 0.02, full=False)
    d.reset()
    assert d.heavy_from is None and not d.dense(0.9)


def test_noisy_stream_runs_dense_when_that_is_faster_and_keeps_the_bits():
    """Frames that change nearly every pixel (sensor noise) but not all: whichever path the
    session picks per frame, every frame is bit-identical to a dense session's."""
    model = zoo.resnet_like(64)
    shape = (1, 3, 64, 64)
    auto = reuserun.InferenceSession(model, threads=1)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    rng = np.random.default_rng(0)
    base = rng.random(shape, dtype=np.float32)
    kinds = []
    for i in range(40):
        f = base + np.float32(0.01) * rng.standard_normal(shape).astype(np.float32) * (rng.random(shape[2:]) < 0.95)
        f = np.ascontiguousarray(f, np.float32)
        for a, b in zip(auto.run(None, {"images": f}), dense.run(None, {"images": f})):
            assert a.tobytes() == b.tobytes(), i
        kinds.append(auto.stats["full"])
    assert kinds[1] and kinds[2]  # the first large changes measured the dense cost


RESIDUALS = [  # (conv activation, add activation, residual first, conv outputs, groups, fused)
    (None, "Relu", False, 12, 1, True), (None, None, True, 16, 1, True), ("Sigmoid", None, False, 24, 1, True),
    ("Relu", None, True, 12, 2, True), ("Relu", "Relu", False, 12, 1, False), (None, "Relu", False, 6, 1, False),
]


@pytest.mark.parametrize("conv_act, add_act, first, cout, groups, fused", RESIDUALS)
def test_dense_runs_add_a_residual_in_the_conv_epilogue(conv_act, add_act, first, cout, groups, fused):
    """The program for runs of heavy frames adds a residual in the conv's epilogue (before the
    Add's activation, or after the conv's own) where the kernel can; every frame keeps the bits
    of the cached program, which runs the two steps."""
    from reuserun.runtime.compiler import Compiler

    nodes = [node("Conv", ["x", "w0"], ["r"], pads=[1, 1, 1, 1]), node("Conv", ["r", "w1"], ["c"], pads=[1, 1, 1, 1],
                                                                       group=groups)]
    conv_out = "c"
    if conv_act:
        nodes.append(node(conv_act, ["c"], ["ca"]))
        conv_out = "ca"
    nodes.append(node("Add", ["r", conv_out] if first else [conv_out, "r"], ["s"]))
    nodes.append(node(add_act, ["s"], ["y"]) if add_act else node("Identity", ["s"], ["y"]))
    model = make_model(nodes, [("x", [1, 3, 20, 20])], [("y", [1, cout, 20, 20])],
                       [("w0", rand(cout, 3, 3, 3, seed=1)), ("w1", rand(cout, cout // groups, 3, 3, seed=2))])
    auto = reuserun.InferenceSession(model, threads=2)
    dense = reuserun.InferenceSession(model, policy="dense", threads=2)
    rng = np.random.default_rng(0)
    for i in range(6):
        f = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
        for a, b in zip(auto.run(None, {"x": f}), dense.run(None, {"x": f})):
            assert a.tobytes() == b.tobytes(), i
    assert auto.memory()["without_caches"] > 0  # frames 2.. ran on the program for dense runs
    steps, _ = Compiler(auto.graph, {}, reuse=True).build()
    assert any(st.node is not None and st.node.op == "binary" for st in steps) != fused


@pytest.mark.parametrize("build", [zoo.yolo_like, zoo.mobilenet_v3_like, zoo.unet_like, zoo.resnet_like])
def test_runs_of_heavy_frames_skip_the_caches_and_keep_the_bits(build):
    """Frames that change everywhere, one after another, run through the scratch program (buffers
    shared once dead); the frames after them, partial, still and variants, catch the caches up.
    Every output is bit-identical to a dense session's."""
    model = build(64)
    name = model.graph.input[0].name
    auto = reuserun.InferenceSession(model, threads=2)
    dense = reuserun.InferenceSession(model, policy="dense", threads=2)
    rng = np.random.default_rng(1)
    f = rng.random((1, 3, 64, 64), dtype=np.float32)
    frames = []
    for kind in ["everywhere"] * 4 + ["rows", "still", "everywhere", "everywhere", "rows", "rows"]:
        if kind == "everywhere":
            f = f + np.float32(0.01) * rng.standard_normal(f.shape).astype(np.float32)
        elif kind == "rows":
            f = f.copy()
            f[0, :, 5:9] += np.float32(0.2)
        frames.append(f.astype(np.float32))
    for i, frame in enumerate(frames):
        for a, b in zip(auto.run(None, {name: frame}), dense.run(None, {name: frame})):
            assert a.tobytes() == b.tobytes(), i
        if i == 3:  # a variant needs the caches: it catches them up first
            v = frame.copy()
            v[0, :, 20:24, 20:24] = 0.5
            for a, b in zip(auto.run_variant(None, {name: v}), dense.run(None, {name: v})):
                assert a.tobytes() == b.tobytes()
            dense.run(None, {name: frame})
    held = auto.memory()
    assert 0 < held["without_caches"] < 0.7 * held["cache"]  # dead tensors' buffers reused
