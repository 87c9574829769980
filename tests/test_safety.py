"""Defects a careful tester found: each test failed before its fix. Exactness of a squeeze-excite
vector that changes after a still one, arguments at their edges, a rejected first frame,
exporters' dynamic dims and shapeless outputs, thresholds files, and the CLI's errors."""
import json

import numpy as np
import pytest
from onnx_helpers import make_model, node, rand, run_ort, vi

import reuserun
from reuserun import cli


def _se_model(seed):
    """Conv -> global average pool -> sigmoid -> Mul(conv, sigmoid): a squeeze-excite scale."""
    return make_model([node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                       node("GlobalAveragePool", ["c"], ["g"]),
                       node("Sigmoid", ["g"], ["s"]),
                       node("Mul", ["c", "s"], ["y"])],
                      [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])],
                      [("w", rand(4, 3, 3, 3, seed=seed)), ("b", rand(4, seed=seed + 100))])


@pytest.mark.parametrize("policy", ["auto", "tiles", "rects", "rect"])
def test_squeeze_excite_vector_changing_after_a_still_one(policy):
    """Frame b moves one value by one ulp (the vector stays), c changes the vector: the Mul must
    read the vector's change made earlier in the same native chain, not its last frame's flag."""
    for seed in range(20):
        m = _se_model(seed)
        a = rand(1, 3, 8, 8, seed=seed + 7)
        b = a.copy()
        b[0, 0, 3, 3] = np.nextafter(b[0, 0, 3, 3], np.float32(np.inf))
        c = b.copy()
        c[0, 1, 5, 5] += 0.1
        sess = reuserun.InferenceSession(m, policy=policy)
        dense = reuserun.InferenceSession(m, policy="dense")
        for f in (a, b, c, c, a):
            got = sess.run(None, {"x": f})[0]
            np.testing.assert_array_equal(got, dense.run(None, {"x": f})[0], err_msg=f"seed {seed}")


def _conv_model(h="H", w="W"):
    return make_model([node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                      [("x", [1, 3, h, w])], [("y", [1, 8, h, w])], [("w", rand(8, 3, 3, 3))])


@pytest.mark.parametrize("kwargs, match", [
    (dict(policy="tiles", tile=0), "tile must be"),
    (dict(policy="tiles", tile=-1), "tile must be"),
    (dict(policy="rects", tile=1.5), "tile must be an integer"),
    (dict(threads=-1), "threads must be"),
    (dict(threads=100000), "threads must be"),
    (dict(threads="2"), "threads must be an integer"),
    (dict(threshold=float("nan")), "threshold must be"),
    (dict(threshold=-1e-9), "threshold must be"),
    (dict(threshold="0.1"), "threshold must be"),
    (dict(shift="yes"), "shift must be"),
    (dict(frame_stack=1), "frame_stack must be"),
    (dict(input_shape=(1, 3, 0, 8)), "positive integers"),
    (dict(input_shape=(1, 3, 8.5, 8)), "positive integers"),
    (dict(input_shape="1,3,8,8"), "positive integers"),
    (dict(policy=7), "unknown policy"),
])
def test_arguments_at_their_edges_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reuserun.InferenceSession(_conv_model(), **kwargs)


def test_threads_zero_means_every_core_as_in_onnxruntime():
    sess = reuserun.InferenceSession(_conv_model(), threads=0)
    assert sess.threads >= 1


@pytest.mark.parametrize("first", [
    np.full((1, 3, 8, 8), np.nan, np.float32),
    np.zeros((1, 3, 8, 8), np.float64),
    np.zeros((1, 3, 8, 8), np.int8),
    [[0.0]],
])
def test_rejected_first_frame_binds_no_dims(first):
    sess = reuserun.InferenceSession(_conv_model())
    with pytest.raises(reuserun.InputError):
        sess.run(None, {"x": first})
    sess.reset()
    x = rand(1, 3, 32, 32)
    assert sess.run(None, {"x": x})[0].shape == (1, 8, 32, 32)
    assert sess.get_inputs()[0].shape == [1, 3, 32, 32]


def test_dims_declared_minus_one_or_zero_are_dynamic():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [("y", [1, 3, 8, 8])])
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = -1
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    for d in m.graph.output[0].type.tensor_type.shape.dim:
        d.dim_value = -1
    sess = reuserun.InferenceSession(m)
    x = rand(1, 3, 48, 192)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))
    assert sess.get_inputs()[0].shape == [1, 3, 48, 192]


def test_output_declared_without_a_shape_loads():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [vi("y", None)])
    sess = reuserun.InferenceSession(m)
    assert sess.get_outputs()[0].shape == [1, 3, 8, 8]  # bound by shape inference
    x = rand(1, 3, 8, 8)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))


@pytest.mark.parametrize("value", ["inf", -5, "nan", "0.1", True, None])
def test_thresholds_file_input_threshold_is_checked(tmp_path, value):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"threshold": value, "layer_thresholds": {}}))
    with pytest.raises(ValueError, match="threshold"):
        reuserun.InferenceSession(_conv_model(), layer_thresholds=str(path))


@pytest.mark.parametrize("table, match", [
    ({"Conv_0": -1}, "layer threshold"),
    ({"Conv_0": "1"}, "layer threshold"),
    ([1, 2], "must be a dict"),
    ({"threshold": 0.1, "layer_thresholds": [1]}, "must be an object"),
])
def test_layer_thresholds_malformed(table, match):
    with pytest.raises(ValueError, match=match):
        reuserun.InferenceSession(_conv_model(), layer_thresholds=table)


def test_opset_newer_than_onnx_knows_is_refused():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [("y", [1, 3, 8, 8])])
    m.opset_import[0].version = 99
    with pytest.raises(reuserun.ModelError, match="opset 99"):
        reuserun.InferenceSession(m)


@pytest.mark.parametrize("weight, attrs, match", [
    (np.zeros((0, 3, 1, 1), np.float32), {}, "holds no kernel"),
    (rand(4, 3, 3, 3), dict(strides=[0, 1]), "strides"),
    (rand(4, 3, 3, 3), dict(dilations=[1, -1]), "dilations"),
    (rand(4, 3, 3, 3), dict(pads=[-1, 0, 0, 0]), "pads"),
])
def test_conv_with_impossible_geometry_is_a_model_error(weight, attrs, match):
    m = make_model([node("Conv", ["x", "w"], ["y"], **attrs)], [("x", [1, 3, 8, 8])], [vi("y", None)],
                   [("w", weight)])
    with pytest.raises(reuserun.ModelError, match=match):
        reuserun.InferenceSession(m).run(None, {"x": rand(1, 3, 8, 8)})


def test_huge_declared_shape_is_a_model_error_naming_the_tensor():
    with pytest.raises(reuserun.ModelError, match="tensor 'x' of shape"):
        reuserun.InferenceSession(_conv_model(), input_shape=(1, 3, 100000, 100000))
    with pytest.raises(reuserun.ModelError, match="GiB"):
        reuserun.InferenceSession(_conv_model(30000, 30000))


def test_variants_and_output_names_at_their_edges():
    sess = reuserun.InferenceSession(_conv_model())
    x = rand(1, 3, 8, 8)
    sess.run(None, {"x": x})
    with pytest.raises(reuserun.InputError, match="at least one variant"):
        sess.run_variants(None, {"x": np.zeros((0, 3, 8, 8), np.float32)})
    with pytest.raises(ValueError, match="workers"):
        sess.run_variants(None, {"x": np.repeat(x, 2, axis=0)}, workers=0)
    with pytest.raises(reuserun.InputError, match="list of output names"):
        sess.run("y", {"x": x})
    assert sess.run(["y"], {"x": x})[0].shape == (1, 8, 8, 8)


@pytest.mark.parametrize("argv, match", [
    (["bench", "--source", "video:/no/such.mp4"], "video file not found"),
    (["bench", "--source", "synthetic:bogus"], "unknown scenario"),
    (["bench", "--source", "atari:NoSuchGame"], "NoSuchGame"),
    (["bench", "--source", "bogus"], "unknown source"),
])
def test_cli_errors_are_one_line(argv, match, capsys):
    assert cli.main(argv + ["--frames", "2", "--size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["bench", "--tile", "0"], ["bench", "--frames", "-1"], ["bench", "--size", "0"],
    ["bench", "--threads", "-2"], ["bench", "--threshold", "nan"], ["bench", "--json", "/proc/no/such/r.json"],
    ["tune", "--max-error", "-1"], ["tune", "--max-error", "nan"], ["tune", "--max-error", "0"],
    ["occlusion", "builtin:mobilenet", "x.png", "--patch", "0"], ["bench", "--mean", "1,nan"],
])
def test_cli_arguments_at_their_edges(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {}),
    ("HardSwish", {}), ("Elu", {}), ("Softplus", {}), ("Clip", {}), ("MaxPool", {"kernel_shape": [2, 2]}),
    ("AveragePool", {"kernel_shape": [2, 2]}), ("GlobalMaxPool", {}), ("GlobalAveragePool", {}),
])
def test_nan_made_inside_the_network_is_kept(op, attrs):
    """inf - inf makes a NaN at one pixel; every op after it passes the NaN on (onnxruntime's
    activations and MaxPool do; its GlobalMaxPool drops it, reuserun keeps it), and the dense
    and incremental runs agree bit for bit."""
    ins = ["n"]
    inits = [("wp", np.full((8, 3, 1, 1), 1e38, np.float32)), ("wn", np.full((8, 3, 1, 1), -1e38, np.float32))]
    if op == "Clip":
        ins += ["lo", "hi"]
        inits += [("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.5, np.float32))]
    m = make_model([node("Conv", ["x", "wp"], ["a"]), node("Conv", ["x", "wn"], ["b"]), node("Add", ["a", "b"], ["n"]),
                    node(op, ins, ["y"], **attrs)], [("x", [1, 3, 8, 16])], [vi("y", None)], inits)
    x = np.zeros((1, 3, 8, 16), np.float32)
    x[0, :, 2, 3] = 10.0
    want = run_ort(m, {"x": x})["y"]
    dense, auto = reuserun.InferenceSession(m, policy="dense"), reuserun.InferenceSession(m)
    for f in (np.zeros_like(x), x, x):
        got, ref = auto.run(None, {"x": f})[0], dense.run(None, {"x": f})[0]
        assert got.tobytes() == ref.tobytes()
    assert np.isnan(got).any()
    if op != "GlobalMaxPool":
        assert np.isnan(got)[np.isnan(want)].all()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(got)], rtol=1e-5, atol=1e-6)


def _nhwc_model():
    """What keras2onnx and tf2onnx write: an NHWC input, a Transpose to NCHW, then the net."""
    return make_model([node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                       node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["y"])],
                      [("x", [1, 16, 20, 3])], [("y", [1, 4, 16, 20])], [("w", rand(4, 3, 3, 3))])


def test_channels_last_input_stays_incremental():
    m = _nhwc_model()
    sess, dense = reuserun.InferenceSession(m), reuserun.InferenceSession(m, policy="dense")
    ort_sess = reuserun.InferenceSession(m, dense_backend="onnxruntime")
    x = rand(1, 16, 20, 3)
    for i in range(4):
        x = x.copy()
        x[0, 3 + i, 5:7, :] += 0.5
        if i == 3:
            x = x + np.float32(0.01)  # everywhere: onnxruntime takes it, fed the frame as given
        got, ref = sess.run(None, {"x": x})[0], dense.run(None, {"x": x})[0]
        assert got.tobytes() == ref.tobytes()
        np.testing.assert_allclose(got, run_ort(m, {"x": x})["y"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ort_sess.run(None, {"x": x})[0], ref, rtol=1e-5, atol=1e-5)
        if i == 1:
            assert sess.stats["mac_fraction"] < 0.5
    assert sess.channels_last_inputs == {"x"} and sess.get_inputs()[0].shape == [1, 16, 20, 3]
    edited = x.copy()
    edited[0, 2:5, 3:9, :] = 0.0
    want = reuserun.InferenceSession(m, policy="dense").run(None, {"x": edited})[0]
    for changed in (None, [(2, 5, 3, 9)]):
        assert sess.run_variant(None, {"x": edited}, changed=changed)[0].tobytes() == want.tobytes()
    batch = sess.run_variants(None, {"x": np.stack([edited[0], x[0]])}, changed=[[(2, 5, 3, 9)], [(0, 1, 0, 1)]])
    assert batch[0][0].tobytes() == want[0].tobytes()
    assert sess.run(None, {"x": x})[0].tobytes() == dense.run(None, {"x": x})[0].tobytes()
    with pytest.raises(reuserun.InputError, match="expected shape"):
        sess.run(None, {"x": np.zeros((1, 3, 16, 20), np.float32)})


def test_occlusion_map_of_a_channels_last_model_matches_its_channels_first_twin():
    from reuserun.occlusion import occlusion_map
    nhwc = _nhwc_model()
    nchw = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["y"])],
                      [("x", [1, 3, 16, 20])], [("y", [1, 4, 16, 20])], [("w", rand(4, 3, 3, 3))])
    x = rand(1, 16, 20, 3, seed=3)
    a = occlusion_map(reuserun.InferenceSession(nhwc), x, patch=4, stride=4, target=5, workers=1)
    b = occlusion_map(reuserun.InferenceSession(nchw), np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                      patch=4, stride=4, target=5, workers=1)
    np.testing.assert_array_equal(a["heat"], b["heat"])


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 1, 100)])
def test_input_smaller_than_the_kernel_is_a_model_error(shape):
    m = make_model([node("Conv", ["x", "w"], ["y"], strides=[2, 2])], [("x", [1, 3, "H", "W"])],
                   [vi("y", None)], [("w", rand(8, 3, 3, 3))])
    with pytest.raises(reuserun.ModelError, match="smaller than the kernel"):
        reuserun.InferenceSession(m, input_shape=shape)
    pool = make_model([node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3])], [("x", [1, 3, "H", "W"])],
                      [vi("y", None)])
    with pytest.raises(reuserun.ModelError, match="smaller than the kernel"):
        reuserun.InferenceSession(pool).run(None, {"x": rand(*shape)})
