"""Property tests: on random graphs and random change masks, every policy is bit-identical to
the dense policy, and the dense policy matches onnxruntime."""
import os

import numpy as np
import onnxruntime as ort
import pytest
from graphgen import edit_frames, random_graph
from hypothesis import given
from hypothesis import strategies as st

import reuserun

POLICIES = ["auto", "tiles", "rects", "rect"]


def ort_run(model, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


def check_stream(model, frames, tiles=(1, 2, 4), threads=2):
    dense = reuserun.InferenceSession(model, policy="dense", threads=threads)
    sessions = [reuserun.InferenceSession(model, policy=p, threads=threads) for p in POLICIES]
    sessions += [reuserun.InferenceSession(model, policy="tiles", tile=t, threads=threads) for t in tiles]
    for i, f in enumerate(frames):
        ref = dense.run(None, {"x": f})
        if i in (0, len(frames) - 1):
            for a, b in zip(ort_run(model, f), ref):
                np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
        for s in sessions:
            out = s.run(None, {"x": f})
            for a, b in zip(out, ref):
                assert a.tobytes() == b.tobytes(), (s.policy_name, i)
    return sessions


@given(st.data())
def test_random_graphs_bit_identical(data):
    d, model, rng, (c, h, w) = random_graph(data, channels=(1, 4), size=(5, 20), ops=(2, 7))
    first = rng.standard_normal((1, c, h, w)).astype(np.float32)
    frames = [first] + edit_frames(rng, first, 4, d.choice(["pixels", "rect", "rects", "mixed"]))
    check_stream(model, frames)


@given(st.data())
def test_random_graphs_with_onnxruntime_as_dense_backend(data):
    """dense_backend="onnxruntime" on random graphs and streams mixing small edits, still frames
    and changes everywhere: every frame reuserun computes is bit-identical to the dense policy,
    every frame onnxruntime takes is onnxruntime's own output."""
    d, model, rng, (c, h, w) = random_graph(data, channels=(1, 4), size=(5, 20), ops=(2, 7))
    first = rng.standard_normal((1, c, h, w)).astype(np.float32)
    frames = [first] + edit_frames(rng, first, 6, "mixed")
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    sess = reuserun.InferenceSession(model, threads=1, dense_backend="onnxruntime")
    for f in frames:
        out = sess.run(None, {"x": f})
        want = ort_run(model, f) if sess.stats["backend"] == "onnxruntime" else dense.run(None, {"x": f})
        for a, b in zip(out, want):
            assert a.tobytes() == b.tobytes(), sess.stats["backend"]


def test_thread_count_does_not_change_bits():
    from reuserun import sources, zoo
    m = zoo.default_model(64)
    frames = list(sources.synthetic_stream((1, 3, 64, 64), "objects", frames=3))
    outs = []
    for threads in (1, 2):
        s = reuserun.InferenceSession(m, policy="auto", threads=threads)
        outs.append([s.run(None, {"images": f}) for f in frames])
    for a, b in zip(*outs):
        for x, y in zip(a, b):
            assert x.tobytes() == y.tobytes()


_HASH_OUTPUTS = """
import hashlib, numpy as np, reuserun
from reuserun import zoo
h = hashlib.sha1()
for name in ("resnet", "yolo", "mobilenet"):
    s = reuserun.InferenceSession(zoo.MODELS[name](64), threads=2)
    n = s.get_inputs()[0].name
    x = np.random.default_rng(0).random(tuple(s.get_inputs()[0].shape), dtype=np.float32)
    for i in range(3):
        x[..., 4 * i:4 * i + 9, 7:20] += 0.3
        for o in s.run(None, {n: x}):
            h.update(o.tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_sixteen_lane_tiles_give_the_same_bits_as_eight_lane_ones(tmp_path):
    """With AVX-512 a 16-channel block takes one 16-lane register (REUSERUN_NO_AVX512=1 turns it
    off): every lane's FMAs come in the same order, so outputs must not change."""
    import subprocess
    import sys
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # the same package from another folder
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    runs = []
    for flag in ("0", "1"):
        env["REUSERUN_NO_AVX512"] = flag
        # run outside the source tree, so the installed package is imported (as pytest does)
        done = subprocess.run([sys.executable, "-c", _HASH_OUTPUTS], env=env, capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.strip())
    assert runs[0] == runs[1] and len(runs[0]) == 40


def test_depthwise_pixel_subsets_give_the_dense_bits():
    """Every depthwise path (the row slide for 3-, 5- and 7-wide kernels, borders included; the
    per-pixel path for the rest) gives a pixel the same bits whatever list it comes in: runs cut
    at random, single pixels, whole rows, the full frame."""
    from reuserun.kernels import conv as kconv
    rng = np.random.default_rng(0)
    for k, s, pads, C in [(3, 1, (1, 1, 1, 1), 24), (5, 2, (2, 1, 2, 2), 16), (7, 1, (3, 3, 3, 3), 32),
                          (7, 2, (3, 2, 3, 3), 8), (7, 1, (0, 3, 1, 2), 12), (4, 1, (1, 2, 2, 1), 16)]:
        H, W = 15, 19
        OH, OW = (H + pads[0] + pads[2] - k) // s + 1, (W + pads[1] + pads[3] - k) // s + 1
        x = rng.standard_normal((H, W, C)).astype(np.float32)
        w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
        packed = kconv.pack_dw_weights(w)

        def run(pix, x=x, packed=packed, k=k, s=s, pads=pads, C=C, OH=OH, OW=OW):
            y = np.zeros((OH, OW, C), np.float32)
            kern = kconv.DepthwiseKernel(x, 0, y, 0, packed, np.zeros(C, np.float32), None, C, (k, k), (s, s),
                                         pads, (1, 1), 0, 0.0, 0.0)
            kern.run(np.ascontiguousarray(pix, np.int32), len(pix), None, -1.0, 1)
            return y.reshape(-1, C)

        full = run(np.arange(OH * OW))
        xp = np.pad(x, ((pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
        want = np.zeros((OH, OW, C), np.float32)
        for ky in range(k):
            for kx in range(k):
                want += xp[ky:ky + s * (OH - 1) + 1:s, kx:kx + s * (OW - 1) + 1:s] * w[:, 0, ky, kx]
        np.testing.assert_allclose(full, want.reshape(-1, C), rtol=1e-5, atol=1e-5)
        for _ in range(20):
            pix = np.flatnonzero(rng.random(OH * OW) < rng.choice([0.05, 0.3, 0.7, 0.95]))
            if pix.size:
                assert run(pix)[pix].tobytes() == full[pix].tobytes(), (k, s, pads)


@given(st.data())
def test_widths_off_the_vector_width_give_the_dense_bits(data):
    """Per-pixel kernels over channel counts that are no multiple of 8 (8-lane blocks, the last
    one overlapping the block before, computed in place for the binaries): broadcast binaries
    with an activation, a residual add and a bilinear resize, on random streams; and a head
    that reshapes the result into a flat tensor and back (the layout conversions)."""
    from onnx_helpers import make_model, node

    C = data.draw(st.sampled_from([9, 13, 21, 27, 33]), label="channels")
    h, w = data.draw(st.integers(4, 12), label="h"), data.draw(st.integers(4, 12), label="w")
    coord = data.draw(st.sampled_from(["half_pixel", "align_corners", "asymmetric"]), label="coord")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    scale = rng.standard_normal((1, C, 1, 1)).astype(np.float32)
    nodes = [node("Mul", ["x", "scale"], ["m"]), node("Relu", ["m"], ["r"]), node("Add", ["r", "x"], ["a"]),
             node("Sub", ["a", "half"], ["s"]),
             node("Resize", ["s", "", "scales"], ["up"], mode="linear", coordinate_transformation_mode=coord),
             node("Reshape", ["up", "flat_shape"], ["flat"]), node("Sigmoid", ["flat"], ["sig"]),
             node("Reshape", ["sig", "grid_shape"], ["grid"]), node("Mul", ["grid", "up"], ["y"])]
    model = make_model(nodes, [("x", (1, C, h, w))], [("y", (1, C, 2 * h, 2 * w))],
                       [("scale", scale), ("half", np.array(0.5, np.float32)),
                        ("scales", np.array([1, 1, 2, 2], np.float32)),
                        ("flat_shape", np.array([1, C, 4 * h * w], np.int64)),
                        ("grid_shape", np.array([1, C, 2 * h, 2 * w], np.int64))])
    first = rng.standard_normal((1, C, h, w)).astype(np.float32)
    frames = [first] + edit_frames(rng, first, 4, data.draw(st.sampled_from(["pixels", "rect", "mixed"])))
    check_stream(model, frames)


def test_layout_conversions_round_trip():
    """A frame into its channels-last cache and back, whole: one long row (a flat head tensor),
    a channel slice of a wider buffer, one channel, and a frame large enough to go parallel;
    the buffer's other channels are left alone."""
    from reuserun.kernels import region
    rng = np.random.default_rng(0)
    for C, H, W, ld, off, threads in [(80, 1, 8400, 84, 4, 2), (3, 7, 5, 3, 0, 1), (21, 64, 64, 24, 0, 2),
                                      (1, 5, 9, 1, 0, 2), (5, 300, 900, 8, 3, 2)]:
        chw = rng.standard_normal((C, H, W)).astype(np.float32)
        buf = np.full((H, W, ld), np.nan, np.float32)
        region.to_channels_last(chw, buf, off, threads)
        assert np.array_equal(buf[:, :, off:off + C].transpose(2, 0, 1), chw)
        assert np.isnan(np.delete(buf, np.s_[off:off + C], axis=2)).all()
        out = np.empty((C, H * W), np.float32)
        region.to_channels_first(buf, off, C, None, out, threads)
        assert np.array_equal(out.reshape(C, H, W), chw)
