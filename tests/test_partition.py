"""Partitioned execution: nodes reuserun has no kernel for run in embedded onnxruntime sessions
on their own subgraphs; the rest of the model stays reuserun's, incremental and exact."""
import numpy as np
import onnx
import pytest
from onnx_helpers import make_model, node, rand, run_ort, vi

import reuserun
from reuserun.frontend import load_model
from reuserun.info import describe

X = (1, 3, 24, 24)


def _div_no_nan_model() -> onnx.ModelProto:
    """conv -> relu -> x / (x + x^2 mask) written as tf2onnx writes div_no_nan (Equal, Where on a
    bool mask), then Log of a softplus, TopK over the channels, and a conv after all of it."""
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"], name="relu1"),
        node("Equal", ["r1", "zero"], ["is0"], name="div_no_nan/eq"),
        node("Div", ["c1", "r1"], ["q"], name="div_no_nan/div"),
        node("Where", ["is0", "zero", "q"], ["d"], name="div_no_nan/where"),
        node("Softplus", ["d"], ["sp"], name="softplus"),
        node("Log", ["sp"], ["lg"], name="log"),
        node("TopK", ["lg", "k"], ["top", "idx"], name="topk", axis=1),
        node("Conv", ["top", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, [("x", X)], [("y", (1, 4, 24, 24))],
                      [("w1", rand(8, 3, 3, 3, seed=1)), ("b1", rand(8, seed=2)), ("zero", np.zeros((), np.float32)),
                       ("k", np.array([5], np.int64)), ("w2", rand(4, 5, 3, 3, seed=3))])


def test_equal_and_where_run_as_one_partition():
    g = load_model(_div_no_nan_model())
    islands = [n for n in g.nodes if n.op == "onnx_op"]
    assert [n.attrs["op_type"] for n in islands] == ["Equal+Where", "Log", "TopK"]
    assert [n.op for n in g.nodes if n.op != "onnx_op"] == ["conv", "act", "binary", "act", "conv"]
    text = describe(g)
    assert "onnxruntime (Equal+Where)" in text and "3 partition(s) run in onnxruntime" in text


def test_partitioned_model_matches_onnxruntime_and_its_own_dense_run():
    model = _div_no_nan_model()
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal(X).astype(np.float32)]
    for step in range(6):
        f = frames[-1].copy()
        if step == 2:
            pass  # a still frame
        elif step == 4:
            f[0, 1, 5, 5] = np.nextafter(f[0, 1, 5, 5], np.float32(np.inf))  # one ulp
        else:
            y, x = rng.integers(0, 20, 2)
            f[..., y:y + 4, x:x + 4] = rng.standard_normal((1, 3, 4, 4))
        frames.append(f)
    auto = reuserun.InferenceSession(model, threads=1)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    for f in frames:
        got, want = auto.run(None, {"x": f})[0], dense.run(None, {"x": f})[0]
        assert np.array_equal(got, want)
        np.testing.assert_allclose(got, run_ort(model, {"x": f})["y"], rtol=1e-4, atol=1e-5)
    assert auto.stats["mac_fraction"] < 1


def test_nodes_before_a_partition_stay_incremental():
    """A change reaches the first conv's positions near it, however the partition after it runs."""
    model = _div_no_nan_model()
    sess = reuserun.InferenceSession(model, threads=1)
    f = rand(*X, seed=5)
    sess.run(None, {"x": f})
    g = f.copy()
    g[..., 3, 3] += 1.0
    sess.run(None, {"x": g})
    first = sess.stats["layers"][0]
    assert first["name"] == "conv1" and first["computed"] <= 9 < first["total"]


def test_a_change_crosses_an_elementwise_partition_where_it_happened():
    """Equal+Where and Log compute position by position: the conv after them recomputes only
    near the change (TopK over channels is per position too), and every frame stays exact."""
    model = _div_no_nan_model()
    sess = reuserun.InferenceSession(model, threads=1)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    f = rand(*X, seed=5)
    sess.run(None, {"x": f})
    g = f.copy()
    g[..., 12, 12] += 1.0
    got = sess.run(None, {"x": g})[0]
    assert np.array_equal(got, dense.run(None, {"x": g})[0])
    last = sess.stats["layers"][-1]
    assert last["name"] == "conv2" and 0 < last["computed"] <= 49 < last["total"]


def test_strict_refuses_what_would_run_in_onnxruntime():
    with pytest.raises(reuserun.UnsupportedOpsError, match="Equal x1.*Where x1"):
        reuserun.InferenceSession(_div_no_nan_model(), strict=True)


def test_a_bool_tensor_that_leaves_its_partition_is_refused_clearly():
    m = make_model([node("Greater", ["x", "zero"], ["m"], name="gt"), node("Cast", ["m"], ["y"], to=1)],
                   [("x", X)], [("y", X)], [("zero", np.zeros((), np.float32))])
    g = load_model(m)  # the Cast reads the mask inside the partition: fine
    assert [n.attrs["op_type"] for n in g.nodes] == ["Greater+Cast"]
    m2 = make_model([node("Greater", ["x", "zero"], ["y"], name="gt")], [("x", X)],
                    [vi("y", X, onnx.TensorProto.BOOL)], [("zero", np.zeros((), np.float32))])
    with pytest.raises(reuserun.UnsupportedOpsError, match="BOOL tensor 'y'"):
        load_model(m2)
