"""ONNX front-end: every supported op/attr combination against onnxruntime, via numpy_ops."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx_helpers import const, make_model, node, one_op_model, rand, run_ort, vi

import reuserun
from reuserun import ir
from reuserun.frontend import load_model
from reuserun.runtime.numpy_ops import NUMPY_OPS, run_graph

I64 = np.int64


def check(model, input_shapes=None, seed=0, atol=1e-4, rtol=1e-4) -> ir.Graph:
    """Load with reuserun, run with numpy_ops, compare every output with onnxruntime."""
    g = load_model(model, input_shapes)
    feeds = {n: rand(*g.tensors[n].shape, seed=seed + k) for k, n in enumerate(g.inputs)}
    got = run_graph(g, feeds)
    want = run_ort(model, feeds)
    assert set(got) == set(want)
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, err_msg=name)
    check_runtime(model, g, feeds, want, input_shapes, atol, rtol)
    return g


def check_runtime(model, g, feeds, want, input_shapes, atol, rtol):
    """The same model through reuserun's kernels: dense against onnxruntime, then an edited
    frame incrementally against dense, bit for bit."""
    if any(len(v.shape) in (3, 4) and v.shape[0] != 1 for v in feeds.values()):
        return  # reuserun streams batch-1 frames
    dense = reuserun.InferenceSession(model, policy="dense", input_shape=input_shapes)
    inc = reuserun.InferenceSession(model, policy="auto", input_shape=input_shapes)
    got = dict(zip(g.outputs, dense.run(None, feeds)))
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, err_msg=f"runtime {name}")
    inc.run(None, feeds)
    edited = {k: v.copy() for k, v in feeds.items()}
    first = next(iter(edited.values()))
    first.reshape(-1)[first.size // 2] += 1.0
    for a, b in zip(inc.run(None, edited), dense.run(None, edited)):
        assert a.tobytes() == b.tobytes()


def ops_of(g: ir.Graph) -> list[str]:
    return [n.op for n in g.nodes]


# ---- convolutions ---------------------------------------------------------------------------

W3 = rand(4, 3, 3, 3, seed=1)
B4 = rand(4, seed=2)


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 1, 1, 1]),
    dict(strides=[2, 2], dilations=[2, 2], pads=[0, 1, 2, 0]),
    dict(strides=[2, 1], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(strides=[3, 2], auto_pad="VALID"),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 2, 1, 0]),
])
def test_conv(attrs):
    g = check(one_op_model("Conv", [1, 3, 9, 10], ["w", "b"], {"w": W3, "b": B4}, **attrs))
    assert ops_of(g) == ["conv"]


def test_conv_groups_depthwise_no_bias_nonsquare():
    check(one_op_model("Conv", [2, 4, 7, 8], ["w"], {"w": rand(6, 2, 1, 5, seed=3)},
                       group=2, pads=[0, 2, 0, 2]))
    g = check(one_op_model("Conv", [1, 6, 8, 8], ["w", "b"],
                           {"w": rand(6, 1, 3, 3, seed=4), "b": rand(6, seed=5)},
                           group=6, strides=[2, 2], pads=[1, 1, 1, 1]))
    assert g.nodes[0].attrs["group"] == 6 and g.nodes[0].attrs["bias"].shape == (6,)


def test_conv_1d_as_2d():
    g = check(one_op_model("Conv", [1, 3, 17], ["w", "b"],
                           {"w": rand(5, 3, 3, seed=6), "b": rand(5, seed=7)},
                           strides=[2], dilations=[2], pads=[2, 1]))
    a = g.nodes[0].attrs
    assert a["weight"].shape == (5, 3, 1, 3) and a["strides"] == (1, 2)
    assert a["pads"] == (0, 2, 0, 1) and a["dilations"] == (1, 2)
    check(one_op_model("Conv", [1, 3, 10], ["w"], {"w": rand(5, 3, 4, seed=6)},
                       auto_pad="SAME_UPPER"))


@pytest.mark.parametrize("cin", [3, 8, 13, 32])
@pytest.mark.parametrize("op,k,attrs", [
    ("Conv", 1, {}),
    ("Conv", 3, dict(pads=[1, 1, 1, 1])),
    ("Conv", 3, dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    ("Conv", 5, dict(strides=[2, 1], pads=[2, 1, 0, 2])),
    ("ConvTranspose", 3, dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
])
def test_conv_to_one_channel(cin, op, k, attrs):
    """Heads with one output channel have their own kernel (dot products over a pixel's taps,
    eight pixels at a time, windows inside the image on a faster path): every channel tail,
    window geometry and edge against onnxruntime, then random boxes incrementally against dense."""
    shape = (1, cin, 20, 27)
    w = rand(*((cin, 1, k, k) if op == "ConvTranspose" else (1, cin, k, k)), seed=cin)
    model = one_op_model(op, list(shape), ["w", "b"], {"w": w, "b": rand(1, seed=1)}, **attrs)
    check(model)
    rng = np.random.default_rng(cin)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    inc = reuserun.InferenceSession(model, policy="auto", threads=1)
    x = rand(*shape, seed=2)
    for i in range(6):
        if i:
            y0, x0 = rng.integers(0, 18), rng.integers(0, 25)
            x = x.copy()
            x[..., y0:y0 + rng.integers(1, 6), x0:x0 + rng.integers(1, 14)] += 1.0
        assert inc.run(None, {"x": x})[0].tobytes() == dense.run(None, {"x": x})[0].tobytes()


@pytest.mark.parametrize("cin", [1, 4, 13])
@pytest.mark.parametrize("cout", [1, 2, 4, 3])
@pytest.mark.parametrize("strides,shape", [([2, 2], [21, 26]), ([2, 3], [9, 7]), ([3, 1], [5, 11]), ([2], [23])])
@pytest.mark.parametrize("after", ["", "Sigmoid", "Concat"])
def test_conv_transpose_kernel_equals_stride(cin, cout, strides, shape, after):
    """Upsamplers whose kernel equals their stride with 1, 2 or 4 outputs have their own kernel
    (a vector of whole pixels, gathered inputs; 3 outputs take the general one): against
    onnxruntime, then random boxes incrementally against dense, exact and under a threshold,
    with the output alone or as a channel slice of a concat."""
    x_shape = [1, cin, *shape]
    w = rand(cin, cout, *strides, seed=cin + cout)
    nodes = [node("ConvTranspose", ["x", "w", "b"], ["t"], strides=strides)]
    inits = [("w", w), ("b", rand(cout, seed=3))]
    if after == "Sigmoid":
        nodes.append(node("Sigmoid", ["t"], ["y"]))
    elif after == "Concat":
        nodes += [node("Resize", ["x", "", "s"], ["r"], mode="nearest"), node("Concat", ["t", "r"], ["y"], axis=1)]
        inits.append(("s", np.array([1, 1, *strides], np.float32)))
    else:
        nodes[0].output[0] = "y"
    model = make_model(nodes, [("x", x_shape)], ["y"], inits)
    check(model)
    rng = np.random.default_rng(cin * 7 + cout)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    sessions = [reuserun.InferenceSession(model, policy="auto", threads=t) for t in (1, 2)]
    loose = reuserun.InferenceSession(model, policy="auto", threads=1, layer_thresholds={"default": 0.05})
    x = rand(*x_shape, seed=2)
    for i in range(6):
        if i:
            x = x.copy()
            box = tuple(slice(a, a + int(rng.integers(1, 6))) for a in (int(rng.integers(0, n)) for n in shape))
            x[(..., *box)] += 1.0
        want = dense.run(None, {"x": x})[0]
        for sess in sessions:
            assert sess.run(None, {"x": x})[0].tobytes() == want.tobytes()
        assert np.abs(loose.run(None, {"x": x})[0] - want).max() <= 0.05 + 1e-6


@pytest.mark.parametrize("cin,cout,k,stride", [(3, 8, 3, 1), (16, 4, 3, 2), (3, 24, 7, 2), (16, 32, 3, 1)])
def test_conv_on_scattered_pixels(cin, cout, k, stride):
    """Frames that change isolated pixels a few columns apart: the conv's pixel lists break into
    tiles of runs, gaps and repeated last pixels, each computed the way a dense frame computes
    it (dense frames use the one-row-run shortcut for nearly every tile)."""
    shape = [1, cin, 23, 40]
    model = one_op_model("Conv", shape, ["w", "b"], {"w": rand(cout, cin, k, k, seed=cin), "b": rand(cout, seed=1)},
                         strides=[stride, stride], pads=[k // 2] * 4)
    check(model)
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    inc = reuserun.InferenceSession(model, policy="auto", threads=1)
    rng = np.random.default_rng(cout)
    x = rand(*shape, seed=2)
    for i in range(8):
        if i:
            x = x.copy()
            for row in rng.integers(0, shape[2], 3):
                cols = np.cumsum(rng.integers(1, 8, 6))
                x[0, :, row, cols[cols < shape[3]]] += 1.0
        assert inc.run(None, {"x": x})[0].tobytes() == dense.run(None, {"x": x})[0].tobytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_transpose_kernel_equals_stride_large(threads):
    """Large enough to split the pixel list between threads."""
    model = one_op_model("ConvTranspose", [1, 16, 64, 64], ["w", "b"],
                         {"w": rand(16, 4, 2, 2, seed=1), "b": rand(4, seed=2)}, strides=[2, 2])
    check(model)
    dense = reuserun.InferenceSession(model, policy="dense", threads=threads)
    inc = reuserun.InferenceSession(model, policy="auto", threads=threads)
    x = rand(1, 16, 64, 64, seed=3)
    inc.run(None, {"x": x})
    x[..., 5:60, 3:40] += 1.0
    assert inc.run(None, {"x": x})[0].tobytes() == dense.run(None, {"x": x})[0].tobytes()


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ([1, 4, 5, 6], (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 0])),
    ([1, 4, 5, 5], (4, 2, 3, 2), dict(group=2, dilations=[2, 1], strides=[1, 2])),
    ([1, 4, 5, 6], (4, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ([1, 4, 5, 6], (4, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ([1, 4, 5, 6], (4, 3, 3, 3), dict(strides=[2, 2], output_shape=[10, 12])),
    ([1, 4, 5, 6], (4, 3, 4, 4), dict(strides=[2, 2], pads=[1, 2, 1, 0])),
    ([1, 4, 9], (4, 3, 3), dict(strides=[2], pads=[1, 0], output_padding=[1])),
])
def test_conv_transpose(x_shape, w_shape, attrs):
    cout = w_shape[1] * attrs.get("group", 1)
    g = check(one_op_model("ConvTranspose", x_shape, ["w", "b"],
                           {"w": rand(*w_shape, seed=8), "b": rand(cout, seed=9)}, **attrs))
    assert ops_of(g) == ["conv_transpose"]


# ---- activations and elementwise ------------------------------------------------------------

X4 = [1, 3, 5, 6]


@pytest.mark.parametrize("op,opset,attrs", [
    ("Relu", 17, {}),
    ("LeakyRelu", 17, dict(alpha=0.2)),
    ("LeakyRelu", 17, {}),
    ("Sigmoid", 17, {}),
    ("HardSigmoid", 17, dict(alpha=0.3, beta=0.4)),
    ("HardSwish", 14, {}),
    ("Tanh", 17, {}),
    ("Elu", 17, dict(alpha=0.5)),
    ("Softplus", 17, {}),
    ("Mish", 18, {}),
    ("Clip", 6, dict(min=-0.5, max=0.7)),
    ("Clip", 6, dict(max=0.3)),
    ("Identity", 17, {}),
])
def test_activation(op, opset, attrs):
    g = check(one_op_model(op, X4, opset=opset, **attrs))
    assert len(g.nodes) == 1


@pytest.mark.parametrize("inputs", [["lo", "hi"], ["lo"], ["", "hi"], []])
def test_clip_inputs(inputs):
    inits = {k: np.array(v, np.float32) for k, v in (("lo", -0.3), ("hi", 0.4)) if k in inputs}
    g = check(one_op_model("Clip", X4, inputs, inits, opset=13))
    a = g.nodes[0].attrs
    assert a["alpha"] == (np.float32(-0.3) if "lo" in inputs else -np.inf)
    assert a["beta"] == (np.float32(0.4) if "hi" in inputs else np.inf)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1, 3, 1, 1), (1,)])
def test_prelu(slope_shape):
    g = check(one_op_model("PRelu", X4, ["s"], {"s": rand(*slope_shape, seed=3)}))
    assert g.nodes[0].attrs["kind"] == "prelu"


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary(op):
    c = np.abs(rand(3, 1, 1, seed=4)) + 0.5
    check(one_op_model(op, X4, ["c"], {"c": c}))
    # both operands from the frame, with broadcasting
    m = make_model([node(op, ["x", "z"], ["y"])], [("x", X4), ("z", [1, 3, 1, 6])], ["y"])
    check(m)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("other", ["channel", "scalar", "plane", "same"])
def test_binary_wide(op, other):
    # 16 channels: the kernels' 8-lane span path, with each way the second operand broadcasts
    x = [1, 16, 5, 7]
    if other in ("channel", "scalar"):
        c = np.abs(rand(*((16, 1, 1) if other == "channel" else (1,)), seed=5)) + 0.5
        check(one_op_model(op, x, ["c"], {"c": c}))
    else:
        z = [1, 1, 5, 7] if other == "plane" else x
        check(make_model([node(op, ["x", "z"], ["y"])], [("x", x), ("z", z)], ["y"]))


@pytest.mark.parametrize("form,kind", [("Softplus", "softplus"), ("Mish", "mish"),
                                       ("Softplus-Tanh-Mul", "mish"), ("Sigmoid-Mul", "silu")])
def test_softplus_mish_and_gated_patterns(form, kind):
    """YOLOv4's Mish as one op (opset 18) or as the pattern exporters wrote before it, and
    YOLOv5's SiLU as Sigmoid-Mul: each is fused into one activation and then into the conv
    before it; inputs reach far into both tails (about +-60) against onnxruntime."""
    from reuserun.runtime.fuse import fuse
    nodes = [node("Conv", ["x", "w"], ["c"])]
    if form == "Softplus-Tanh-Mul":
        nodes += [node("Softplus", ["c"], ["s"]), node("Tanh", ["s"], ["t"]), node("Mul", ["t", "c"], ["y"])]
    elif form == "Sigmoid-Mul":
        nodes += [node("Sigmoid", ["c"], ["s"]), node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(node(form, ["c"], ["y"]))
    model = make_model(nodes, [("x", X4)], ["y"], [("w", rand(4, 3, 1, 1, seed=5, scale=12.0))], opset=18)
    check(model)
    fused = fuse(load_model(model)).nodes
    assert [n.op for n in fused] == ["conv"]
    assert fused[0].attrs["act"]["kind"] == kind


def test_gated_pattern_left_alone_when_its_inner_value_is_used():
    """The tanh output also feeds a graph output: the chain stays as it is, still correct."""
    from reuserun.runtime.fuse import fuse
    nodes = [node("Softplus", ["x"], ["s"]), node("Tanh", ["s"], ["t"]), node("Mul", ["x", "t"], ["y"])]
    model = make_model(nodes, [("x", X4)], ["y", "t"], opset=17)
    check(model)
    assert [n.attrs["kind"] if n.op == "act" else n.op for n in fuse(load_model(model)).nodes] == \
        ["softplus", "tanh", "binary"]


def test_softplus_and_mish_keep_their_tails():
    """Relative precision where the values are tiny (softplus(-80) is 2e-35) and where they
    approach x, against float64."""
    x = np.linspace(-80, 80, 4001, dtype=np.float32).reshape(1, 1, 1, -1)
    sp = np.logaddexp(0, x.astype(np.float64))
    for op, want in (("Softplus", sp), ("Mish", x * np.tanh(sp))):
        model = make_model([node(op, ["x"], ["y"])], [("x", list(x.shape))], ["y"], opset=18)
        got = reuserun.InferenceSession(model, policy="dense").run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-37, err_msg=op)


def test_sigmoid_and_silu_keep_their_precision():
    """The exp and reciprocal behind sigmoid and SiLU stay within a few ulps over the whole
    range, tails included (sigmoid(-80) is 2e-35), against float64."""
    x = np.linspace(-80, 80, 4001, dtype=np.float32).reshape(1, 1, 1, -1)
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    for nodes, want in (([node("Sigmoid", ["x"], ["y"])], sig),
                        ([node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"], ["y"])], x * sig)):
        model = make_model(nodes, [("x", list(x.shape))], ["y"])
        got = reuserun.InferenceSession(model, policy="dense").run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=5e-7, atol=1e-37, err_msg=str(len(nodes)))


def test_silu_numpy_op():
    x = rand(2, 3, seed=1)
    n = ir.Node("act", "s", ["x"], ["y"], dict(kind="silu", alpha=0.0, beta=0.0))
    np.testing.assert_allclose(NUMPY_OPS["act"](n, [x])[0], x / (1 + np.exp(-x)), rtol=1e-6)


# ---- pooling --------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1),
    dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[2, 2]),
    dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),  # last window in pad
])
def test_maxpool(attrs):
    g = check(one_op_model("MaxPool", [1, 3, 9, 10], **attrs))
    assert ops_of(g) == ["maxpool"]


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1),
    dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1),
    dict(kernel_shape=[3, 2]),
])
def test_avgpool(attrs):
    g = check(one_op_model("AveragePool", [1, 3, 9, 10], **attrs))
    assert ops_of(g) == ["avgpool"]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_ceil_mode_per_axis(op):
    # H drops the window that would start past the input, W keeps a ceil window: onnx's shape
    # inference and onnxruntime disagree on H; the loader follows onnxruntime.
    g = check(one_op_model(op, [1, 2, 3, 3], kernel_shape=[1, 2], strides=[3, 2], ceil_mode=1))
    assert g.tensors["y"].shape == (1, 2, 1, 2)


def test_pool_1d_and_global():
    check(one_op_model("MaxPool", [1, 3, 11], kernel_shape=[3], strides=[2], pads=[1, 1]))
    check(one_op_model("AveragePool", [1, 3, 11], kernel_shape=[3], strides=[2], ceil_mode=1))
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        g = check(one_op_model(op, X4))
        assert g.tensors["y"].shape == (1, 3, 1, 1)



@pytest.mark.parametrize("C", [3, 8, 29, 32, 64, 131, 160, 300])
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_sums_each_channel_in_pixel_order(op, C):
    """Each channel is pooled in pixel order, whichever group of channels (128, 32 or 8 at a
    time) it falls in and on any thread count: the mean is bit-identical to a running float32
    sum over the pixels divided by their count."""
    x = rand(1, C, *((60, 60) if C == 300 else (7, 9)), seed=C, scale=100.0)  # 300: over 1M values, 2 threads
    flat = x.reshape(C, -1)
    if op == "GlobalAveragePool":
        want = np.cumsum(flat, axis=1, dtype=np.float32)[:, -1] / np.float32(flat.shape[1])
    else:
        want = flat.max(axis=1)
    for threads in (1, 2):
        got = reuserun.InferenceSession(one_op_model(op, list(x.shape)), policy="dense",
                                        threads=threads).run(None, {"x": x})[0]
        assert got.reshape(-1).tobytes() == want.astype(np.float32).tobytes(), (op, C, threads)

@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("x_shape,axes", [(X4, [2, 3]), (X4, [-1, -2]), ([1, 3, 11], [2])])
@pytest.mark.parametrize("opset", [17, 18])
def test_spatial_reduce_is_a_global_pool(op, keepdims, x_shape, axes, opset):
    a = np.array(axes, I64)
    m = (one_op_model(op, x_shape, keepdims=keepdims, axes=axes) if opset < 18 else
         one_op_model(op, x_shape, ["a"], {"a": a}, opset=18, keepdims=keepdims))
    g = check(m)
    assert ops_of(g)[0] == {"ReduceMean": "global_avgpool", "ReduceMax": "global_maxpool"}[op]


def test_other_reductions_run_through_the_reference_evaluator():
    """Reductions the kernels lack (over channels, over everything) run in numpy through onnx's
    reference evaluator and match onnxruntime."""
    cases = [one_op_model("ReduceMean", X4, axes=[1]),
             one_op_model("ReduceMean", X4, axes=[1, 2, 3]),
             one_op_model("ReduceMax", X4),
             one_op_model("ReduceMean", [2, 6], axes=[1])]
    for m in cases:
        assert ops_of(load_model(m)) == ["onnx_op"]
        x = rand(*[d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim])
        np.testing.assert_allclose(reuserun.InferenceSession(m).run(None, {"x": x})[0], run_ort(m, {"x": x})["y"],
                                   rtol=1e-5, atol=1e-6)
    # no axes with noop_with_empty_axes (opset 18) reduces nothing
    assert ops_of(check(one_op_model("ReduceMean", X4, opset=18, noop_with_empty_axes=1))) == ["identity"]


# ---- resize ---------------------------------------------------------------------------------

def _f(*v):
    return np.array(v, np.float32)


@pytest.mark.parametrize("opset,inputs,inits,attrs", [
    (10, ["s"], {"s": _f(1, 1, 2, 2)}, dict(mode="nearest")),
    (10, ["s"], {"s": _f(1, 1, 2, 1.5)}, dict(mode="linear")),
    (10, ["s"], {"s": _f(1, 1, 0.5, 0.5)}, dict(mode="nearest")),
    (11, ["roi", "s"], {"roi": _f(), "s": _f(1, 1, 2, 2)}, dict(mode="nearest")),
    (11, ["roi", "s"], {"roi": _f(), "s": _f(1, 1, 2, 3)},
     dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    (13, ["", "s"], {"s": _f(1, 1, 1.5, 2.5)},
     dict(mode="nearest", coordinate_transformation_mode="half_pixel",
          nearest_mode="round_prefer_ceil")),
    (13, ["", "s"], {"s": _f(1, 1, 2, 2)},
     dict(mode="nearest", coordinate_transformation_mode="align_corners", nearest_mode="ceil")),
    (13, ["", "s"], {"s": _f(1, 1, 2, 2)}, dict(mode="linear")),
    (13, ["", "s"], {"s": _f(1, 1, 0.5, 0.6)},
     dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    (13, ["", "", "sz"], {"sz": np.array([1, 3, 13, 7], I64)},
     dict(mode="linear", coordinate_transformation_mode="align_corners")),
    (13, ["", "s", "sz"], {"s": _f(), "sz": np.array([1, 3, 11, 1], I64)},
     dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    (13, ["", "", "sz"], {"sz": np.array([1, 3, 3, 9], I64)},
     dict(mode="nearest", coordinate_transformation_mode="half_pixel")),
    (18, ["", "s"], {"s": _f(2, 3)}, dict(mode="linear", axes=[2, 3])),
    (18, ["", "", "sz"], {"sz": np.array([12, 12], I64)},
     dict(mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_larger")),
    (19, ["", "", "sz"], {"sz": np.array([12, 12], I64)},
     dict(mode="nearest", axes=[2, 3], keep_aspect_ratio_policy="not_smaller")),
])
def test_resize(opset, inputs, inits, attrs):
    g = check(one_op_model("Resize", [1, 3, 5, 6], inputs, inits, opset=opset, **attrs))
    assert ops_of(g) == ["resize"]


def test_resize_negative_axes():
    # onnxruntime 1.32 and onnx's reference both mishandle negative Resize axes: compare with
    # the same model spelled with positive axes.
    def model(axes):
        return one_op_model("Resize", [1, 3, 5, 6], ["", "", "sz"], {"sz": np.array([12, 12], I64)},
                            opset=19, mode="nearest", axes=axes,
                            keep_aspect_ratio_policy="not_smaller")
    x = rand(1, 3, 5, 6)
    g = load_model(model([-2, -1]))
    assert g.tensors["y"].shape == (1, 3, 12, 14)
    want = run_ort(model([2, 3]), {"x": x})["y"]
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], want)


def test_resize_tf_half_pixel_for_nearest():
    # Neither onnxruntime 1.32 nor onnx's reference runs this mode any more: check by hand.
    g = load_model(one_op_model("Resize", [1, 2, 5, 6], ["", "s"], {"s": _f(1, 1, 1.5, 2.5)},
                                opset=13, mode="nearest", nearest_mode="round_prefer_ceil",
                                coordinate_transformation_mode="tf_half_pixel_for_nearest"))
    x = rand(1, 2, 5, 6)
    rows = np.minimum(np.floor((np.arange(7) + 0.5) / 1.5 + 0.5), 4).astype(int)
    cols = np.minimum(np.floor((np.arange(15) + 0.5) / 2.5 + 0.5), 5).astype(int)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], x[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("opset,mode", [(9, "nearest"), (9, "linear"), (7, "nearest")])
def test_upsample(opset, mode):
    if opset == 7:
        m = one_op_model("Upsample", X4, opset=7, mode=mode, scales=[1.0, 1.0, 2.0, 3.0])
    else:
        m = one_op_model("Upsample", X4, ["s"], {"s": _f(1, 1, 2, 2.5)}, opset=opset, mode=mode)
    g = check(m)
    assert g.nodes[0].attrs["coord_mode"] == "asymmetric"


# ---- data movement --------------------------------------------------------------------------

def test_concat():
    m = make_model([node("Concat", ["x", "c", "z"], ["y"], axis=-3)],
                   [("x", X4), ("z", [1, 2, 5, 6])], ["y"], [("c", rand(1, 4, 5, 6, seed=2))])
    g = check(m)
    assert g.nodes[0].attrs["axis"] == 1 and g.tensors["c"].is_const


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, -4], [4, 100], [2, 3], None),
    ([-1], [-100], [3], [-1]),
    ([10, 0], [0, 6], [2, -1], [-2, 2]),
    ([0, 1, 1], [1, 3, 4], None, None),
    ([2], [2**62], [-2], [3]),
])
def test_slice(starts, ends, axes, steps):
    names, inits = ["st", "en"], {"st": np.array(starts, I64), "en": np.array(ends, I64)}
    if axes is not None or steps is not None:
        names.append("ax")
        inits["ax"] = np.array(axes if axes is not None else range(len(starts)), I64)
    if steps is not None:
        names.append("sp")
        inits["sp"] = np.array(steps, I64)
    g = check(one_op_model("Slice", X4, names, inits, opset=13))
    assert ops_of(g) == ["slice"]


def test_slice_opset1():
    check(one_op_model("Slice", X4, opset=1, starts=[1, -3], ends=[5, 1000], axes=[2, 3]))


@pytest.mark.parametrize("opset,inputs,inits,attrs,n", [
    (11, [], {}, dict(axis=1, split=[1, 2]), 2),
    (13, ["sp"], {"sp": np.array([2, 1, 3], I64)}, dict(axis=-1), 3),
    (13, [], {}, dict(axis=1), 3),
    (18, [], {}, dict(axis=3, num_outputs=4), 4),
])
def test_split(opset, inputs, inits, attrs, n):
    outs = [f"y{i}" for i in range(n)]
    g = check(one_op_model("Split", X4, inputs, inits, opset=opset, outputs=outs, **attrs))
    assert ops_of(g) == ["split"]


@pytest.mark.parametrize("opset,mode,pads,axes", [
    (2, "constant", [0, 0, 1, 2, 0, 0, 2, 1], None),
    (11, "reflect", [0, 0, 2, 1, 0, 0, 1, 3], None),
    (13, "edge", [0, 0, 3, 0, 0, 0, 0, 2], None),
    (18, "constant", [1, 2, 3, 0], [2, -1]),
    (13, "constant", [0, 0, -1, 2, 0, 0, 1, -2], None),
    (11, "constant", [0, 1, 1, 0, 0, 0, 2, 2], "no value"),
])
def test_pad(opset, mode, pads, axes):
    if opset < 11:
        m = one_op_model("Pad", X4, opset=opset, mode=mode, pads=pads, value=1.5)
    else:
        inputs, inits = ["p", "v"], {"p": np.array(pads, I64), "v": _f(-2.0)}
        if axes == "no value":
            inputs, axes = ["p"], None
        if axes is not None:
            inputs.append("a")
            inits["a"] = np.array(axes, I64)
        m = one_op_model("Pad", X4, inputs, inits, opset=opset, mode=mode)
    check(m)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis):
    check(one_op_model("Flatten", X4, axis=axis))


@pytest.mark.parametrize("shape,allowzero", [([0, -1], 0), ([1, 3, -1, 2], 0), ([3, 30], 1),
                                             ([-1], 0)])
def test_reshape(shape, allowzero):
    attrs = dict(allowzero=allowzero) if allowzero else {}
    g = check(one_op_model("Reshape", X4, ["s"], {"s": np.array(shape, I64)}, opset=14, **attrs))
    assert -1 not in g.nodes[0].attrs["shape"] and 0 not in g.nodes[0].attrs["shape"]


def test_transpose_gemm_matmul():
    check(one_op_model("Transpose", X4, perm=[0, 2, 3, 1]))
    check(one_op_model("Transpose", [2, 3, 4]))
    check(one_op_model("Gemm", [2, 5], ["b", "c"], {"b": rand(3, 5, seed=1), "c": rand(3, seed=2)},
                       transB=1, alpha=0.5, beta=2.0))
    check(one_op_model("Gemm", [5, 2], ["b"], {"b": rand(5, 3, seed=1)}, transA=1))
    m = make_model([node("Gemm", ["x", "z"], ["y"])], [("x", [2, 4]), ("z", [4, 3])], ["y"])
    check(m)
    check(one_op_model("MatMul", [1, 3, 5, 6], ["w"], {"w": rand(6, 4, seed=3)}))
    check(one_op_model("MatMul", [2, 6], ["w"], {"w": rand(6, 4, seed=3)}))


@pytest.mark.parametrize("act", [("HardSwish", {}), ("Relu", {}), ("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.1})])
def test_classifier_tail_activations_run_in_the_gemm_kernels(act):
    """MobileNetV3's tail: pool -> Flatten -> Gemm -> HardSwish -> Flatten -> Gemm. The
    activations run in the Gemm kernels and the second Flatten (already flat) is no step at all,
    so no numpy fallback is left; results match onnxruntime and stay bit-identical under edits."""
    kind, attrs = act
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    node("GlobalAveragePool", ["c"], ["g"]), node("Flatten", ["g"], ["f"]),
                    node("Gemm", ["f", "w1", "b1"], ["h"], transB=1), node(kind, ["h"], ["a"], **attrs),
                    node("Flatten", ["a"], ["f2"]), node("Gemm", ["f2", "w2"], ["z"]),
                    node(kind, ["z"], ["y"], **attrs)],
                   [("x", [1, 3, 8, 8])], ["y"],
                   [("w", rand(16, 3, 3, 3, seed=1)), ("w1", rand(40, 16, seed=2)), ("b1", rand(40, seed=3)),
                    ("w2", rand(40, 10, seed=4, scale=0.3))])
    check(m)
    sess = reuserun.InferenceSession(m)
    sess.run(None, {"x": rand(1, 3, 8, 8)})
    assert [type(s).__name__ for s in sess.program if s.node is not None and s.node.op != "conv"] == [
        "KernelStep", "SpatialGemmStep", "GemvStep"]


@pytest.mark.parametrize("opset,shape,axis,n_nodes", [
    (13, [1, 3, 4, 5], 1, 1),
    (13, [2, 7], -1, 1),
    (11, [1, 3, 4, 5], 1, 3),  # coerced to 2-D: one softmax over C*H*W
    (11, [1, 3, 4, 5], -1, 1),
    (11, [2, 7], 1, 1),
    (11, [2, 3, 4, 1], 2, 1),  # trailing unit dims: a plain softmax
])
def test_softmax(opset, shape, axis, n_nodes):
    g = check(one_op_model("Softmax", shape, opset=opset, axis=axis))
    assert len(g.nodes) == n_nodes


def test_dropout_squeeze_unsqueeze_cast():
    g = check(one_op_model("Dropout", X4, ["r"], {"r": np.array(0.3, np.float32)}, opset=13))
    assert ops_of(g) == ["identity"]
    check(one_op_model("Dropout", X4, opset=7, ratio=0.5))
    check(one_op_model("Unsqueeze", X4, ["a"], {"a": np.array([0, -1], I64)}, opset=13))
    check(one_op_model("Unsqueeze", X4, opset=11, axes=[2]))
    g = check(one_op_model("Squeeze", [1, 3, 1, 6], ["a"], {"a": np.array([2], I64)}, opset=13))
    assert ops_of(g) == ["reshape"] and g.tensors["y"].shape == (1, 3, 6)
    g = check(one_op_model("Cast", X4, to=TensorProto.FLOAT))
    assert ops_of(g) == ["identity"]


# ---- batch norm -----------------------------------------------------------------------------

def _bn_inits(c, seed=0):
    return {"g": rand(c, seed=seed), "bb": rand(c, seed=seed + 1),
            "mu": rand(c, seed=seed + 2), "var": np.abs(rand(c, seed=seed + 3)) + 0.1}


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_folds(bias):
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    inits = {"w": W3, "b": B4, **_bn_inits(4)}
    m = make_model([node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
                    node("BatchNormalization", ["c", "g", "bb", "mu", "var"], ["y"], epsilon=1e-3)],
                   [("x", [1, 3, 6, 6])], ["y"], list(inits.items()))
    g = check(m)
    assert ops_of(g) == ["conv"] and g.nodes[0].attrs["bias"] is not None


@pytest.mark.parametrize("group,bias", [(1, True), (1, False), (2, True)])
def test_conv_transpose_bn_folds(group, bias):
    """U-Net and DBNet decoders: ConvTranspose -> BatchNormalization is one op; the scale goes to
    the weights' second axis (output channels per group)."""
    w = rand(4, 6 // group, 2, 3, seed=11)
    inits = {"w": w, **_bn_inits(6), **({"b": rand(6, seed=12)} if bias else {})}
    m = make_model([node("ConvTranspose", ["x", "w", "b"] if bias else ["x", "w"], ["c"], strides=[2, 2],
                         group=group),
                    node("BatchNormalization", ["c", "g", "bb", "mu", "var"], ["y"], epsilon=1e-3)],
                   [("x", [1, 4, 5, 6])], ["y"], list(inits.items()))
    g = check(m)
    assert ops_of(g) == ["conv_transpose"]


def test_standalone_bn_and_shared_conv():
    inits = {"w": W3, **_bn_inits(4)}
    m = make_model([node("Conv", ["x", "w"], ["c"]),
                    node("BatchNormalization", ["c", "g", "bb", "mu", "var"], ["y"]),
                    node("Relu", ["c"], ["z"])],  # the conv output has a second reader
                   [("x", [1, 3, 6, 6])], ["y", "z"], list(inits.items()))
    g = check(m)
    assert ops_of(g) == ["conv", "binary", "binary", "act"]
    m = make_model([node("Relu", ["x"], ["r"]),
                    node("BatchNormalization", ["r", "g", "bb", "mu", "var"], ["y"])],
                   [("x", [1, 4, 3, 5])], ["y"], list(_bn_inits(4).items()))
    g = check(m)
    assert [n.attrs.get("kind") for n in g.nodes] == ["relu", "mul", "add"]
    assert g.tensors[g.nodes[1].inputs[1]].shape == (4, 1, 1)


# ---- folding and dynamic shapes -------------------------------------------------------------

def _shape_chain_model(x_shape, y_shape, opset=13):
    unsqueeze = (node("Unsqueeze", ["n", "ax"], ["n1"]) if opset >= 13
                 else node("Unsqueeze", ["n"], ["n1"], axes=[0]))
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Constant", [], ["i0"], value=const("i0v", np.array(0, I64))),
        node("Gather", ["s", "i0"], ["n"], axis=0),
        unsqueeze,
        node("Cast", ["n1"], ["n2"], to=TensorProto.INT64),
        node("Concat", ["n2", "minus1"], ["shape"], axis=0),
        node("Reshape", ["x", "shape"], ["r"]),
        node("Relu", ["r"], ["y"]),
    ]
    inits = [("minus1", np.array([-1], I64))]
    if opset >= 13:
        inits.append(("ax", np.array([0], I64)))
    # onnx's own data propagation stops at this chain, so the output shape is spelled out.
    return make_model(nodes, [("x", x_shape)], [("y", y_shape)], inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 13])
def test_shape_chain_folds(opset):
    # Each node folds at its own opset: Unsqueeze-11 takes axes as an attribute.
    g = check(_shape_chain_model([2, 3, 4, 4], [2, 48], opset))
    assert ops_of(g) == ["reshape", "act"] and g.nodes[0].attrs["shape"] == (2, 48)


def test_dynamic_dims_bound():
    g = check(_shape_chain_model(["N", 3, 4, 4], ["N", 48]), input_shapes={"x": (3, 3, 4, 4)})
    assert g.nodes[0].attrs["shape"] == (3, 48)
    m = one_op_model("Conv", ["N", 3, "H", "W"], ["w"], {"w": W3}, strides=[2, 2])
    g = check(m, input_shapes={"x": (2, 3, 11, 9)})
    assert g.tensors["y"].shape == (2, 4, 5, 4)


def test_dynamic_dims_errors():
    m = one_op_model("Relu", ["N", 3, "H", "W"])
    with pytest.raises(ir.ModelError, match="'x'.*input_shape"):
        load_model(m)
    with pytest.raises(ir.ModelError, match="conflicts"):
        load_model(m, {"x": (1, 4, 5, 5)})
    with pytest.raises(ir.ModelError, match="conflicts"):
        load_model(m, {"x": (1, 3, 5)})
    with pytest.raises(ir.ModelError, match="nope"):
        load_model(m, {"x": (1, 3, 5, 5), "nope": (1,)})


def test_caller_model_untouched():
    m = one_op_model("Relu", X4)
    before = m.SerializeToString()
    load_model(m)
    assert m.SerializeToString() == before


def test_constant_output_and_initializer_input():
    # An initializer listed as a graph input is a constant, not an input.
    m = make_model([node("Add", ["x", "c"], ["y"])], [("x", X4), ("c", [3, 1, 1])], ["y"],
                   [("c", rand(3, 1, 1, seed=5))])
    g = check(m)
    assert g.inputs == ["x"] and g.tensors["c"].is_const


def test_model_local_function_inlined():
    fn = onnx.helper.make_function("local", "ReluTwice", ["a"], ["b"],
                                   [node("Relu", ["a"], ["t"]), node("Relu", ["t"], ["b"])],
                                   [onnx.helper.make_opsetid("", 17)])
    m = make_model([onnx.helper.make_node("ReluTwice", ["x"], ["y"], domain="local")],
                   [("x", X4)], [("y", X4)])
    m.opset_import.append(onnx.helper.make_opsetid("local", 1))
    m.functions.append(fn)
    g = check(m)
    assert ops_of(g) == ["act", "act"]


# ---- errors ---------------------------------------------------------------------------------

def test_unsupported_ops_listed_together():
    nodes = [
        node("RandomUniformLike", ["x"], ["e1"], name="ein1"),
        node("RandomUniformLike", ["e1"], ["e2"], name="ein2"),
        node("TopK", ["e2", "k"], ["t", "ti"], name="topk", axis=3),
        node("MaxPool", ["t"], ["r", "ri"], name="mp", kernel_shape=[1, 1]),
        node("Relu", ["r"], ["y"]),
    ]
    m = make_model(nodes, [("x", X4)], ["y"],
                   [("k", np.array([2], I64)), ("s", _f(1, 1, 2, 2))], opset=17)
    with pytest.raises(ir.UnsupportedOpsError) as e:
        load_model(m, strict=True)
    assert e.value.opset == 17
    assert set(e.value.missing) == {"RandomUniformLike", "TopK", "MaxPool"}
    assert e.value.missing["RandomUniformLike"] == ["ein1", "ein2"]
    msg = str(e.value)
    assert "ein1" in msg and "topk" in msg and "mp" in msg and "opset 17" in msg and "\n" not in msg
    # by default TopK and the MaxPool the kernels lack run in onnxruntime; random ops never do
    with pytest.raises(ir.UnsupportedOpsError) as e:
        load_model(m)
    assert e.value.missing == {"RandomUniformLike": ["ein1", "ein2"]}
    assert "random" in str(e.value)


def test_unsupported_ops_error_is_short():
    n = 40
    nodes = [node("Sqrt" if i % 2 else "Exp", [f"t{i}"], [f"t{i + 1}"], name=f"block{i}/" + "x" * 200)
             for i in range(n)]
    m = make_model(nodes, [("t0", X4)], [(f"t{n}", X4)])
    with pytest.raises(ir.UnsupportedOpsError) as e:
        load_model(m, strict=True)
    msg = str(e.value)
    assert len(msg) < 600 and "Exp x20" in msg and "Sqrt x20" in msg and "17 more" in msg


def test_custom_domain_op_listed():
    n = onnx.helper.make_node("Foo", ["x"], ["f"], domain="my.ops", name="foo")
    m = make_model([n, node("Relu", ["f"], ["y"])], [("x", X4)], [("y", X4)])
    m.opset_import.append(onnx.helper.make_opsetid("my.ops", 1))
    with pytest.raises(ir.UnsupportedOpsError) as e:
        load_model(m)
    assert e.value.missing == {"my.ops.Foo": ["foo"]}


def test_shape_inference_error_is_model_error():
    m = one_op_model("Add", X4, ["c"], {"c": rand(4, 1, 1)}, outputs=[("y", X4)])
    with pytest.raises(ir.ModelError, match="shape inference"):
        load_model(m)
    m = one_op_model("Conv", X4, ["w"], {"w": rand(4, 5, 3, 3)})  # 5 input channels, x has 3
    with pytest.raises(ir.ModelError, match="channels"):
        load_model(m)


def test_unsupported_attrs_and_data_dependent_ops():
    """Attributes the kernels lack and ops without a converter run through onnx's reference
    evaluator, matching onnxruntime; a non-float tensor (MaxPool's indices, Dropout's mask)
    still makes the op unsupported."""
    for m in [one_op_model("MaxPool", X4, outputs=("y", "idx"), kernel_shape=[2, 2]),
              one_op_model("Dropout", X4, opset=13, outputs=("y", "mask"))]:
        with pytest.raises(ir.UnsupportedOpsError):
            load_model(m)
    for m in [one_op_model("Resize", X4, ["", "s"], {"s": _f(1, 1, 2, 2)}, opset=18, mode="linear",
                           antialias=1),
              one_op_model("Gather", X4, ["i"], {"i": np.array([0, 2], I64)}, axis=1)]:
        assert ops_of(load_model(m)) == ["onnx_op"]
        x = rand(*X4)
        np.testing.assert_allclose(reuserun.InferenceSession(m).run(None, {"x": x})[0], run_ort(m, {"x": x})["y"],
                                   rtol=1e-5, atol=1e-6)


def test_malformed_models(tmp_path: pathlib.Path):
    m = one_op_model("Relu", X4)
    data = m.SerializeToString()
    with pytest.raises(ir.ModelError):
        load_model(data[: len(data) // 2])
    with pytest.raises(ir.ModelError):
        load_model(b"\x08\x07garbage\xff\xfe" * 10)
    with pytest.raises(ir.ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[:-7])
    with pytest.raises(ir.ModelError):
        load_model(str(bad))
    good = tmp_path / "good.onnx"
    good.write_bytes(data)
    assert ops_of(load_model(good)) == ops_of(load_model(data)) == ["act"]


def test_non_float_input():
    m = make_model([node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                   [vi("x", [1, 3], TensorProto.INT64)], ["y"])
    with pytest.raises(ir.ModelError, match="'x'.*INT64"):
        load_model(m)


def test_ir_does_not_import_onnx():
    src = pathlib.Path(ir.__file__).read_text()
    assert "import onnx" not in src and "from onnx" not in src


# ---- randomised geometry against onnxruntime ------------------------------------------------

FEW = settings()  # the profile's (tests/conftest.py)


@FEW
@given(st.data())
def test_conv_random_geometry(data):
    d = data.draw
    g, cin, cout = d(st.integers(1, 3)), d(st.integers(1, 2)), d(st.integers(1, 2))
    k = [d(st.integers(1, 4)), d(st.integers(1, 4))]
    s, dil = [d(st.integers(1, 3)) for _ in k], [d(st.integers(1, 2)) for _ in k]
    auto_pad = d(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad.startswith("SAME"):
        dil = [1, 1]  # onnxruntime refuses dilated SAME convs
    pads = [d(st.integers(0, 2)) for _ in range(4)]
    h, w = d(st.integers(1, 9)), d(st.integers(1, 9))
    ek = [(kk - 1) * dd + 1 for kk, dd in zip(k, dil)]
    if auto_pad == "NOTSET":
        assume(h + pads[0] + pads[2] >= ek[0] and w + pads[1] + pads[3] >= ek[1])
    elif auto_pad == "VALID":
        assume(h >= ek[0] and w >= ek[1])
    attrs = dict(strides=s, dilations=dil, group=g, auto_pad=auto_pad)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    inits = {"w": rand(g * cout, cin, *k, seed=1), "b": rand(g * cout, seed=2)}
    check(one_op_model("Conv", [1, g * cin, h, w], ["w", "b"], inits, **attrs))


@FEW
@given(st.data())
def test_pool_random_geometry(data):
    d = data.draw
    op = d(st.sampled_from(["MaxPool", "AveragePool"]))
    k = [d(st.integers(1, 3)), d(st.integers(1, 3))]
    s = [d(st.integers(1, 3)) for _ in k]
    dil = [d(st.integers(1, 2)) for _ in k] if op == "MaxPool" else [1, 1]
    pads = [d(st.integers(0, kk - 1)) for kk in k + k]
    h, w = d(st.integers(3, 9)), d(st.integers(3, 9))
    assume(h >= (k[0] - 1) * dil[0] + 1 and w >= (k[1] - 1) * dil[1] + 1)
    attrs = dict(kernel_shape=k, strides=s, pads=pads, ceil_mode=d(st.integers(0, 1)))
    if op == "MaxPool":
        attrs["dilations"] = dil
    else:
        attrs["count_include_pad"] = d(st.integers(0, 1))
    check(one_op_model(op, [1, 2, h, w], **attrs))


@FEW
@given(st.data())
def test_slice_random(data):
    d = data.draw
    shape = [1, 3, 5, 6]
    axes = d(st.lists(st.integers(-4, 3), min_size=1, max_size=3, unique_by=lambda a: a % 4))
    starts = [d(st.integers(-9, 9)) for _ in axes]
    ends = [d(st.sampled_from([-2**63, 2**63 - 1, *range(-9, 10)])) for _ in axes]
    steps = [d(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in axes]
    expected = np.empty(shape)
    for a, b, e, sp in zip(axes, starts, ends, steps):
        expected = expected[(slice(None),) * (a % 4) + (slice(b, e, sp),)]
    assume(expected.size > 0)
    inits = {"st": np.array(starts, I64), "en": np.array(ends, I64),
             "ax": np.array(axes, I64), "sp": np.array(steps, I64)}
    check(one_op_model("Slice", shape, ["st", "en", "ax", "sp"], inits, opset=13))

