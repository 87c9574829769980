"""reuserun as a drop-in for onnxruntime: the same program, written for onnxruntime, runs against
both modules and gets the same answers."""
import json
import types
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest

import reuserun
from reuserun import zoo


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = zoo.mobilenet_v3_like(64)
    onnx.helper.set_model_props(model, {"labels": "a,b,c"})
    model.doc_string, model.model_version = "a test model", 7
    path = tmp_path_factory.mktemp("dropin") / "model.onnx"
    onnx.save(model, str(path))
    return str(path)


def typical_program(rt: types.ModuleType, model_path: str, frames: list) -> dict:
    """What an onnxruntime user writes; `rt` is onnxruntime or reuserun."""
    so = rt.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = rt.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta()
    first = sess.get_inputs()[0]
    names = [o.name for o in sess.get_outputs()]
    ro = rt.RunOptions()
    ro.logid = "camera-1"
    outs = [sess.run(names, {first.name: f}, ro)[0] for f in frames]
    outs.append(sess.run(None, {first.name: frames[0]})[0])
    outs.append(sess.run_with_ort_values(names, {first.name: rt.OrtValue.ortvalue_from_numpy(frames[1])})[0].numpy())

    binding = sess.io_binding()
    bound = np.full(sess.get_outputs()[0].shape, np.nan, np.float32)
    binding.bind_cpu_input(first.name, frames[2])
    binding.bind_output(names[0], "cpu", 0, np.float32, bound.shape, bound.ctypes.data)
    sess.run_with_iobinding(binding)
    copied = binding.copy_outputs_to_cpu()[0]
    as_values = binding.get_outputs()[0].numpy()
    return {"outs": outs, "bound": bound, "copied": copied, "as_values": as_values,
            "meta": (meta.producer_name, meta.graph_name, meta.domain, meta.description, meta.version,
                     meta.custom_metadata_map),
            "inputs": [(a.name, a.shape, a.type) for a in sess.get_inputs()],
            "outputs": [(a.name, a.shape, a.type) for a in sess.get_outputs()],
            "providers": sess.get_providers(), "threads": sess.get_session_options().intra_op_num_threads}


def _frames(n: int = 4) -> list:
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32)]
    for _ in range(n - 1):
        f = frames[-1].copy()
        f[..., 10:20, 30:44] += 0.5
        frames.append(f)
    return frames


def test_a_program_written_for_onnxruntime_runs_unchanged_on_reuserun(model_path):
    frames = _frames()
    want = typical_program(onnxruntime, model_path, frames)
    got = typical_program(reuserun, model_path, frames)
    for key in ("meta", "inputs", "outputs", "providers", "threads"):
        assert got[key] == want[key], key
    for g, w in zip(got["outs"], want["outs"]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # the bound buffer itself holds the output, and the binding reads it back
    np.testing.assert_allclose(got["bound"], want["bound"], rtol=1e-4, atol=1e-5)
    assert np.array_equal(got["copied"], got["bound"]) and np.array_equal(got["as_values"], got["bound"])


def test_positional_session_options_and_a_policy_in_their_place(model_path):
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    assert reuserun.InferenceSession(model_path, so).threads == 1
    with pytest.raises(ValueError, match="policy='tiles'"):
        reuserun.InferenceSession(model_path, "tiles")
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        reuserun.InferenceSession(model_path, so, threads=2)
    with pytest.raises(ValueError, match="SessionOptions"):
        reuserun.InferenceSession(model_path, {"intra_op_num_threads": 1})


def test_a_provider_reuserun_lacks_is_named_in_a_warning(model_path):
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        sess = reuserun.InferenceSession(model_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reuserun.InferenceSession(model_path, providers=[("CPUExecutionProvider", {})])
    with pytest.raises(ValueError, match="providers"):
        reuserun.InferenceSession(model_path, providers="CPUExecutionProvider")


def test_a_terminated_run_is_refused_and_leaves_the_stream_as_it_was(model_path):
    frames = _frames(3)
    sess = reuserun.InferenceSession(model_path)
    twin = reuserun.InferenceSession(model_path)
    for s in (sess, twin):
        s.run(None, {"images": frames[0]})
    stop = onnxruntime.RunOptions()
    stop.terminate = True
    with pytest.raises(reuserun.RunTerminated, match="terminate"):
        sess.run(None, {"images": frames[1]}, stop)
    with pytest.raises(reuserun.InputError, match="RunOptions"):
        sess.run(None, {"images": frames[1]}, {"terminate": True})
    got, want = sess.run(None, {"images": frames[2]}), twin.run(None, {"images": frames[2]})
    assert sess.stats["mac_fraction"] == twin.stats["mac_fraction"] < 1
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_enable_profiling_writes_a_trace_onnxruntime_tools_read(model_path, tmp_path):
    so = onnxruntime.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "trace")
    sess = reuserun.InferenceSession(model_path, so)
    ro = onnxruntime.RunOptions()
    ro.logid = "cam"
    for f in _frames(3):
        sess.run(None, {"images": f}, ro)
    path = sess.end_profiling()
    assert path.startswith(str(tmp_path / "trace")) and path.endswith(".json")
    events = json.load(open(path))
    runs = [e for e in events if e["name"] == "model_run"]
    kernels = [e for e in events if e["cat"] == "Node"]
    assert len(runs) == 3 and all(e["args"]["run_tag"] == "cam" for e in runs)
    assert {e["args"]["op_name"] for e in kernels} >= {"conv"}
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    assert sess.get_profiling_start_time_ns() > 0
    assert reuserun.InferenceSession(model_path).end_profiling() == ""


def test_bound_outputs_of_the_wrong_shape_are_refused_before_the_frame(model_path):
    frames = _frames(2)
    sess = reuserun.InferenceSession(model_path)
    sess.run(None, {"images": frames[0]})
    binding = sess.io_binding()
    binding.bind_cpu_input("images", frames[1])
    small = np.zeros((1, 3), np.float32)
    name = sess.get_outputs()[0].name
    binding.bind_output(name, "cpu", 0, np.float32, small.shape, small.ctypes.data)
    with pytest.raises(reuserun.InputError, match="shape"):
        sess.run_with_iobinding(binding)
    with pytest.raises(reuserun.InputError, match="CPU"):
        binding.bind_output(name, "cuda", 0, np.float32, small.shape, 12345)
    # the refused frame was not taken: the same frame again is a change, not a still frame
    sess.run(None, {"images": frames[1]})
    assert 0 < sess.stats["mac_fraction"] < 1


def test_bound_ortvalue_outputs_are_written_in_place(model_path):
    frames = _frames(2)
    sess = reuserun.InferenceSession(model_path)
    name = sess.get_outputs()[0].name
    target = onnxruntime.OrtValue.ortvalue_from_shape_and_type(sess.get_outputs()[0].shape, np.float32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("images", onnxruntime.OrtValue.ortvalue_from_numpy(frames[1]))
    binding.bind_ortvalue_output(name, target)
    sess.run_with_iobinding(binding)
    assert np.array_equal(target.numpy(), sess.run(None, {"images": frames[1]})[0])


def test_module_level_names_of_onnxruntime(model_path):
    assert reuserun.get_available_providers() == ["CPUExecutionProvider"]
    assert reuserun.get_device() == "CPU"
    assert reuserun.SessionOptions is onnxruntime.SessionOptions
    with pytest.raises(AttributeError):
        reuserun.NoSuchThing  # noqa: B018
    sess = reuserun.InferenceSession(model_path)
    assert sess.get_provider_options() == {"CPUExecutionProvider": {}}
    assert sess.get_overridable_initializers() == []
    assert sess.get_session_options().intra_op_num_threads == sess.threads


@pytest.fixture(scope="module")
def batch_model_path(tmp_path_factory):
    """The test model with its batch dim left dynamic."""
    model = zoo.mobilenet_v3_like(64)
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    path = tmp_path_factory.mktemp("dropin") / "batch.onnx"
    onnx.save(model, str(path))
    return str(path)


def _batch_frames(n: int, steps: int = 3) -> list:
    rng = np.random.default_rng(1)
    frames = [rng.standard_normal((n, 3, 64, 64)).astype(np.float32)]
    for _ in range(steps):
        f = frames[-1].copy()
        i, y, x = rng.integers(0, n), *rng.integers(0, 50, 2)
        f[i, :, y:y + 8, x:x + 8] += 0.5
        frames.append(f)
    return frames


def test_a_batch_runs_densely_in_onnxruntime_by_default(batch_model_path):
    ort = onnxruntime.InferenceSession(batch_model_path)
    with pytest.warns(UserWarning, match="batch of 4"):
        sess = reuserun.InferenceSession(batch_model_path, input_shape=(4, 3, 64, 64))
    for f in _batch_frames(4):
        got = sess.run(None, {"images": f})[0]
        assert np.array_equal(got, ort.run(None, {"images": f})[0])
        assert sess.stats["backend"] == "onnxruntime"


def test_a_batch_of_streams_gives_each_index_its_own_cache(batch_model_path):
    frames = _batch_frames(3, steps=4)
    sess = reuserun.InferenceSession(batch_model_path, batch="streams")
    singles = [reuserun.InferenceSession(batch_model_path) for _ in range(3)]
    for k, f in enumerate(frames):
        got = sess.run(None, {"images": f})[0]
        want = np.concatenate([s.run(None, {"images": f[i:i + 1]})[0] for i, s in enumerate(singles)])
        assert got.shape[0] == 3 and np.array_equal(got, want)
        if k:
            assert sess.stats["mac_fraction"] < 0.5  # one index of three changed, a little
    bad = frames[-1].copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(reuserun.InputError, match="NaN"):
        sess.run(None, {"images": bad})
    # the refused batch touched no stream: the last frame again is still everywhere
    sess.run(None, {"images": frames[-1]})
    assert sess.stats["mac_fraction"] == 0


@pytest.mark.parametrize("threshold", [0.0, 0.01])
def test_accept_nan_computes_nan_frames_as_onnxruntime_and_as_the_dense_run(model_path, threshold):
    frames = _frames(6)
    frames[2][0, 1, 20, 20] = np.nan
    frames[3][0, 1, 20, 20] = np.nan       # the same NaN again: still counted as changed
    frames[3][0, 0, 40:44, 5] = np.inf
    # frames[4] is finite again where frames[3] was not
    auto = reuserun.InferenceSession(model_path, threshold=threshold, accept_nan=True, threads=1)
    dense = reuserun.InferenceSession(model_path, policy="dense", accept_nan=True, threads=1)
    ort = onnxruntime.InferenceSession(model_path)
    for k, f in enumerate(frames):
        got = auto.run(None, {"images": f})[0]
        if threshold == 0:
            assert np.array_equal(got, dense.run(None, {"images": f})[0], equal_nan=True)
            np.testing.assert_allclose(got, ort.run(None, {"images": f})[0], rtol=1e-4, atol=1e-5)
        if k in (2, 3):
            assert auto.stats["changed_fraction"] > 0
    with pytest.raises(reuserun.InputError, match="NaN"):
        reuserun.InferenceSession(model_path).run(None, {"images": frames[2]})


def _half(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model stored in float16, as a half-precision export writes it."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    for t in half.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in (*half.graph.input, *half.graph.output):
        v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del half.graph.value_info[:]
    return half


def test_a_float16_model_computes_in_float32_and_answers_in_float16():
    model = zoo.resnet_like(64)
    half = _half(model)
    from reuserun.frontend.precision import to_float32
    # the same rounded weights in float32, what reuserun computes (onnxruntime's CPU lacks
    # float16 kernels for several of these ops)
    ort = onnxruntime.InferenceSession(to_float32(half).SerializeToString())
    sess = reuserun.InferenceSession(half)
    dense = reuserun.InferenceSession(half, policy="dense")
    assert sess.get_inputs()[0].type == "tensor(float16)"
    for f in _frames(4):
        h = f.astype(np.float16)
        got = sess.run(None, {"images": h})[0]
        assert got.dtype == np.float16
        assert got.tobytes() == dense.run(None, {"images": h})[0].tobytes()
        want = ort.run(None, {"images": h.astype(np.float32)})[0].astype(np.float16)
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert sess.stats["mac_fraction"] < 1  # an incremental frame, as in float32
    out = np.empty(sess.get_outputs()[0].shape, np.float16)
    binding = sess.io_binding()
    binding.bind_cpu_input("images", h)
    binding.bind_output(sess.get_outputs()[0].name, "cpu", 0, np.float16, out.shape, out.ctypes.data)
    sess.run_with_iobinding(binding)
    assert out.tobytes() == got.tobytes()
