"""The graph optimizer's rules (runtime/fuse.REWRITES): each fires on the patterns exporters write,
leaves alone what it may not touch, and the rewritten graph matches onnxruntime on the original
model, with the incremental run bit-identical to the dense one."""
import numpy as np
import pytest
from onnx_helpers import make_model, node, rand, run_ort

import reuserun
from reuserun.frontend import load_model
from reuserun.runtime.fuse import REWRITES, fuse


def _ops(graph):
    return [(n.op, n.attrs.get("kind") or (n.attrs.get("act") or {}).get("kind")) for n in graph.nodes]


def _check(model, shape=(1, 3, 12, 12), rtol=1e-4, atol=1e-5):
    """reuserun against onnxruntime on the original model; auto bit-identical to dense over a
    small stream."""
    x = rand(*shape, seed=1)
    want = run_ort(model, {"x": x})
    dense, auto = reuserun.InferenceSession(model, policy="dense"), reuserun.InferenceSession(model)
    for name, got in zip(want, dense.run(None, {"x": x})):
        np.testing.assert_allclose(got, want[name], rtol=rtol, atol=atol)
    auto.run(None, {"x": x})
    for i in range(3):
        x = x.copy()
        x[0, :, 2 + i, 3:5] += 0.5
        for a, b in zip(auto.run(None, {"x": x}), dense.run(None, {"x": x})):
            assert a.tobytes() == b.tobytes()


def _graph(model, shape=(1, 3, 12, 12), skip=()):
    return fuse(load_model(model, {"x": shape}), skip=skip)


def test_rules_are_listed_once_in_order():
    names = [n for n, _ in REWRITES]
    assert len(names) == len(set(names))
    # the layout and activation canonicalisations first: the folds after them see their results
    assert names[:3] == ["channels_last_chains", "gelu", "fold_conv_affine"]


AFFINES = [
    ("Mul", (1,), "w"), ("Mul", (4, 1, 1), "w"), ("Mul", (1, 4, 1, 1), "w"), ("Add", (4, 1, 1), "b"),
    ("Sub", (1,), "b"), ("Div", (4, 1, 1), "w"), ("Sub_reversed", (4, 1, 1), "w"), ("Add", (), "b"),
]


@pytest.mark.parametrize("op, cshape, _", AFFINES)
def test_conv_affine_folds_into_weights(op, cshape, _):
    c = (np.random.default_rng(3).uniform(0.5, 1.5, cshape)).astype(np.float32)
    ins = ["c", "y0"] if op == "Sub_reversed" else ["y0", "c"]
    m = make_model([node("Conv", ["x", "w", "bias"], ["y0"], pads=[1, 1, 1, 1]),
                    node(op.split("_")[0], ins, ["y1"]), node("Relu", ["y1"], ["y"])],
                   [("x", [1, 3, 12, 12])], [("y", [1, 4, 12, 12])],
                   [("w", rand(4, 3, 3, 3)), ("bias", rand(4, seed=2)), ("c", c)])
    assert _ops(_graph(m)) == [("conv", "relu")]
    _check(m)


def test_conv_affine_chain_and_conv_transpose():
    m = make_model([node("ConvTranspose", ["x", "w"], ["t"], strides=[2, 2]),
                    node("Mul", ["t", "s"], ["u"]), node("Add", ["u", "b"], ["y"])],
                   [("x", [1, 3, 12, 12])], [("y", [1, 4, 24, 24])],
                   [("w", rand(3, 4, 2, 2)), ("s", np.float32([0.5, 2, 3, 4]).reshape(4, 1, 1)),
                    ("b", np.float32([1, 2, 3, 4]).reshape(1, 4, 1, 1))])
    assert _ops(_graph(m)) == [("conv_transpose", None)]
    _check(m)


@pytest.mark.parametrize("case", ["two_readers", "spatial_constant", "divide_by_zero", "graph_output"])
def test_conv_affine_left_alone(case):
    c = np.float32([1, 2, 0, 4]).reshape(4, 1, 1) if case == "divide_by_zero" else np.float32(2)
    if case == "spatial_constant":
        c = rand(1, 12, 12, seed=5)
    op = "Div" if case == "divide_by_zero" else "Mul"
    nodes = [node("Conv", ["x", "w"], ["y0"], pads=[1, 1, 1, 1]), node(op, ["y0", "c"], ["y"])]
    outs = [("y", [1, 4, 12, 12])]
    if case == "two_readers":
        nodes.append(node("Relu", ["y0"], ["r"]))
        outs.append(("r", [1, 4, 12, 12]))
    if case == "graph_output":
        outs.append(("y0", [1, 4, 12, 12]))
    m = make_model(nodes, [("x", [1, 3, 12, 12])], outs, [("w", rand(4, 3, 3, 3)), ("c", c)])
    assert ("binary", op.lower()) in _ops(_graph(m))
    if case != "divide_by_zero":
        _check(m)


def _hswish_nodes(style):
    """x * clip(x + 3, 0, 6) / 6 as exporters write it, on the conv output c."""
    if style == "div_last":      # paddle2onnx
        return [node("Add", ["c", "three"], ["a"]), node("Clip", ["a", "zero", "six"], ["k"]),
                node("Mul", ["c", "k"], ["m"]), node("Div", ["m", "six"], ["y"])]
    if style == "mul_sixth":
        return [node("Add", ["c", "three"], ["a"]), node("Clip", ["a", "zero", "six"], ["k"]),
                node("Mul", ["k", "c"], ["m"]), node("Mul", ["m", "sixth"], ["y"])]
    if style == "div_gate":     # x * (relu6(x + 3) / 6)
        return [node("Add", ["c", "three"], ["a"]), node("Clip", ["a", "zero", "six"], ["k"]),
                node("Div", ["k", "six"], ["g"]), node("Mul", ["c", "g"], ["y"])]
    return [node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5), node("Mul", ["c", "g"], ["y"])]


@pytest.mark.parametrize("style", ["div_last", "mul_sixth", "div_gate", "hard_sigmoid"])
def test_decomposed_hard_swish_becomes_one_activation(style):
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])] + _hswish_nodes(style),
                   [("x", [1, 3, 12, 12])], [("y", [1, 4, 12, 12])],
                   [("w", rand(4, 3, 3, 3, scale=3.0)), ("three", np.float32(3)), ("zero", np.float32(0)),
                    ("six", np.float32(6)), ("sixth", np.float32(1 / 6))])
    assert _ops(_graph(m)) == [("conv", "hard_swish")]
    assert ("conv", "hard_swish") not in _ops(_graph(m, skip=("hard_swish",)))
    _check(m)


def test_hard_swish_left_alone_when_the_gate_is_read_elsewhere():
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])] + _hswish_nodes("div_last"),
                   [("x", [1, 3, 12, 12])], [("y", [1, 4, 12, 12]), ("k", [1, 4, 12, 12])],
                   [("w", rand(4, 3, 3, 3, scale=3.0)), ("three", np.float32(3)), ("zero", np.float32(0)),
                    ("six", np.float32(6))])
    assert ("act", "hard_swish") not in _ops(_graph(m)) and ("conv", "hard_swish") not in _ops(_graph(m))
    _check(m)


def test_paddle_learnable_affine_block():
    """conv -> Mul(s) -> Add(b) -> hardswish decomposed -> Mul(s2) -> Add(b2) -> conv, as in
    PP-LCNetV3: the first affine and the hardswish end in the conv."""
    m = make_model([node("Conv", ["x", "w"], ["c0"], pads=[1, 1, 1, 1]), node("Mul", ["c0", "s"], ["c1"]),
                    node("Add", ["c1", "b"], ["c"])] + _hswish_nodes("div_last")
                   + [node("Mul", ["y", "s2"], ["y1"]), node("Add", ["y1", "b2"], ["y2"]),
                      node("Conv", ["y2", "w2"], ["out"])],
                   [("x", [1, 3, 12, 12])], [("out", [1, 2, 12, 12])],
                   [("w", rand(4, 3, 3, 3, scale=3.0)), ("s", np.float32([1.2])), ("b", np.float32([0.1])),
                    ("three", np.float32(3)), ("zero", np.float32(0)), ("six", np.float32(6)),
                    ("s2", np.float32([0.9])), ("b2", np.float32([-0.2])), ("w2", rand(2, 4, 1, 1))])
    graph = _graph(m)
    assert _ops(graph) == [("conv", "hard_swish"), ("conv", None)]
    assert "post" in graph.nodes[0].attrs
    _check(m)


@pytest.mark.parametrize("cout, group, op, cshape", [
    (1, 1, "Mul", (1,)), (4, 1, "Add", (4, 1, 1)), (16, 1, "Mul", (16, 1, 1)), (20, 1, "Sub", (1, 20, 1, 1)),
    (12, 12, "Div", (12, 1, 1)), (8, 8, "Sub_reversed", (1,)), (24, 2, "Mul", (24, 1, 1)),
])
def test_affine_after_activation_runs_in_the_conv_epilogue(cout, group, op, cshape):
    """Every conv kernel path (one output channel, narrow, 16-wide tiles with a tail, depthwise
    with a channel tail, grouped) applies the affine after its activation."""
    cin = group if group > 1 else 3
    c = np.random.default_rng(4).uniform(0.5, 1.5, cshape).astype(np.float32)
    ins = ["c", "r"] if op == "Sub_reversed" else ["r", "c"]
    first = node("Conv", ["x0", "w0"], ["x1"], pads=[0, 0, 0, 0]) if group > 1 else node("Identity", ["x0"], ["x1"])
    m = make_model([first,
                    node("Conv", ["x1", "w", "bias"], ["y0"], pads=[1, 1, 1, 1], group=group),
                    node("Relu", ["y0"], ["r"]), node(op.split("_")[0], ins, ["y"])],
                   [("x", [1, 3, 12, 12])], [("y", [1, cout, 12, 12])],
                   [("w0", rand(cin, 3, 1, 1)), ("w", rand(cout, cin // group, 3, 3)), ("bias", rand(cout, seed=2)),
                    ("c", c)])
    m.graph.node[0].input[0] = "x"
    graph = _graph(m)
    assert [o for o, _ in _ops(graph)][-1] == "conv" and "post" in graph.nodes[-1].attrs
    _check(m)


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_channel_shuffle_becomes_one_incremental_permutation(groups):
    C = 12
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    node("Reshape", ["c", "s5"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
                    node("Reshape", ["t", "s4"], ["u"]), node("Relu", ["u"], ["y"])],
                   [("x", [1, 3, 12, 12])], [("y", [1, C, 12, 12])],
                   [("w", rand(C, 3, 3, 3)), ("s5", np.array([1, groups, C // groups, 12, 12], np.int64)),
                    ("s4", np.array([1, C, 12, 12], np.int64))])
    assert [o for o, _ in _ops(_graph(m))] == ["conv", "channel_shuffle", "act"]
    _check(m)
    sess = reuserun.InferenceSession(m)
    x = rand(1, 3, 12, 12)
    sess.run(None, {"x": x})
    x[0, :, 5, 5] += 1.0
    sess.run(None, {"x": x})
    assert sess.stats["mac_fraction"] < 0.2


def _shuffle_split(C, cuts, extra_reader=False):
    """ShuffleNetV2's block boundary: a conv, its channel shuffle, then channel slices of it (one
    into a concat beside a conv of another, as the next block does)."""
    nodes = [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             node("Reshape", ["c", "s5"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             node("Reshape", ["t", "s4"], ["u"])]
    inits = [("w", rand(C, 3, 3, 3)), ("s5", np.array([1, 2, C // 2, 12, 12], np.int64)),
             ("s4", np.array([1, C, 12, 12], np.int64)), ("w2", rand(4, C, 1, 1, seed=2)),
             ("axis", np.array([1], np.int64))]
    outs = []
    for i, (a, b) in enumerate(cuts):
        inits += [(f"a{i}", np.array([a], np.int64)), (f"b{i}", np.array([b], np.int64))]
        nodes.append(node("Slice", ["u", f"a{i}", f"b{i}", "axis"], [f"s{i}"]))
        outs.append(f"s{i}")
    nodes += [node("Conv", ["s1", "w1"], ["k"]), node("Concat", ["s0", "k"], ["y"], axis=1)]
    inits.append(("w1", rand(5, cuts[1][1] - cuts[1][0], 1, 1, seed=3)))
    outputs = [("y", [1, cuts[0][1] - cuts[0][0] + 5, 12, 12])]
    if extra_reader:
        nodes.append(node("Conv", ["u", "w2"], ["z"]))
        outputs.append(("z", [1, 4, 12, 12]))
    return make_model(nodes, [("x", [1, 3, 12, 12])], outputs, inits)


@pytest.mark.parametrize("cuts", [((0, 6), (6, 12)), ((2, 7), (5, 12))])
def test_slices_of_a_channel_shuffle_select_from_its_input(cuts):
    m = _shuffle_split(12, cuts)
    ops = [o for o, _ in _ops(_graph(m))]
    assert ops.count("channel_shuffle") == 2 and "slice" not in ops
    assert sorted(ops) == sorted(["conv", "channel_shuffle", "channel_shuffle", "conv", "concat"])
    _check(m)


def test_a_channel_shuffle_read_whole_elsewhere_stays():
    m = _shuffle_split(12, ((0, 6), (6, 12)), extra_reader=True)
    ops = [o for o, _ in _ops(_graph(m))]
    assert ops.count("channel_shuffle") == 1 and ops.count("slice") == 2
    _check(m)


def test_ops_without_a_converter_run_through_the_reference_evaluator():
    """Sqrt, Erf and LayerNormalization (ConvNeXt, SVTR heads) have no converter: they run
    through onnx's reference evaluator over the whole tensor, dense and incremental alike."""
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Abs", ["c"], ["a"]),
                    node("Sqrt", ["a"], ["s"]), node("Erf", ["s"], ["e"]),
                    node("LayerNormalization", ["e", "g", "b"], ["y"], axis=-1)],
                   [("x", [1, 3, 12, 12])], [("y", [1, 4, 12, 12])],
                   [("w", rand(4, 3, 3, 3)), ("g", rand(12, seed=5)), ("b", rand(12, seed=6))])
    ops = [o for o, _ in _ops(_graph(m))]
    assert ops.count("onnx_op") == 4 and [n.onnx_op for n in _graph(m).nodes if n.op == "onnx_op"] == \
        ["Abs", "Sqrt", "Erf", "LayerNormalization"]
    _check(m)


@pytest.mark.parametrize("axis, shape", [(3, (1, 40, 60, 2)), (1, (1, 16, 32, 40)), (1, (1, 64, 9, 9))])
def test_softmax_over_a_short_axis_matches_onnxruntime(axis, shape):
    """Softmax over a few classes per position (a detector's scores) folds the classes slice by
    slice; over many, numpy reduces along the axis; both within float tolerance of onnxruntime."""
    m = make_model([node("Softmax", ["x"], ["y"], axis=axis)], [("x", list(shape))], [("y", list(shape))])
    x = rand(*shape, scale=3.0)
    np.testing.assert_allclose(reuserun.InferenceSession(m).run(None, {"x": x})[0], run_ort(m, {"x": x})["y"],
                               rtol=1e-5, atol=1e-7)


def test_erf_runs_in_numpy_within_float_tolerance():
    import math

    from reuserun.frontend.reference import erf
    x = np.concatenate([np.linspace(-6, 6, 20001), np.logspace(-8, 0.5, 200), -np.logspace(-8, 0.5, 200),
                        [0.0, -0.0]]).astype(np.float32)
    want = np.array([math.erf(float(v)) for v in x])
    got = erf(x).astype(np.float64)
    assert np.all(np.abs(got - want) <= 4e-7 * np.abs(want) + 1e-30)


def _gelu_nodes(x, y, style):
    """GELU as torch.onnx writes it before opset 20, and as the Gelu op."""
    if style == "op":
        return [node("Gelu", [x], [y])]
    first = node("Div", [x, "sqrt2"], [f"{y}_s"]) if style != "mul" else node("Mul", [x, "isqrt2"], [f"{y}_s"])
    nodes = [first, node("Erf", [f"{y}_s"], [f"{y}_e"]), node("Add", [f"{y}_e", "one"], [f"{y}_a"])]
    if style == "half_first":
        return nodes + [node("Mul", [x, "half"], [f"{y}_h"]), node("Mul", [f"{y}_h", f"{y}_a"], [y])]
    return nodes + [node("Mul", [x, f"{y}_a"], [f"{y}_m"]), node("Mul", [f"{y}_m", "half"], [y])]


GELU_CONSTS = [("sqrt2", np.float32(np.sqrt(2))), ("isqrt2", np.float32(1 / np.sqrt(2))), ("one", np.float32(1)),
               ("half", np.float32(0.5))]


@pytest.mark.parametrize("style", ["div", "mul", "half_first", "op"])
def test_gelu_becomes_one_activation(style):
    m = make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])] + _gelu_nodes("c", "y", style),
                   [("x", [1, 3, 12, 12])], [("y", [1, 16, 12, 12])],
                   [("w", rand(16, 3, 3, 3, scale=2.0))] + GELU_CONSTS, opset=20)
    assert _ops(_graph(m)) == [("conv", "gelu")]
    _check(m)


def test_gelu_kernel_matches_onnxruntime_over_the_whole_range():
    x = np.concatenate([np.linspace(-12, 12, 4000), np.logspace(-8, 1, 500), -np.logspace(-8, 1, 500),
                        [0.0, -0.0, 0.49999, 0.5, 0.50001]]).astype(np.float32)
    shape = (1, 8, 1, x.size // 8)
    x = x[:np.prod(shape)].reshape(shape)
    m = make_model([node("Gelu", ["x"], ["y"])], [("x", list(shape))], [("y", list(shape))], opset=20)
    np.testing.assert_allclose(reuserun.InferenceSession(m).run(None, {"x": x})[0], run_ort(m, {"x": x})["y"],
                               rtol=2e-6, atol=2e-7)


def _convnext_block(C=16, H=10, W=12, gelu="div", second_norm_reader=False):
    """ConvNeXt's block as torch.onnx writes it: depthwise conv, Transpose to channels-last,
    LayerNormalization, MatMul + Add, GELU, MatMul + Add, Transpose back, layer scale, residual."""
    nodes = [node("Conv", ["x", "dw"], ["d"], pads=[3, 3, 3, 3], group=C),
             node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
             node("LayerNormalization", ["t", "g", "b"], ["n"], axis=-1, epsilon=1e-6),
             node("MatMul", ["n", "w1"], ["m1"]), node("Add", ["b1", "m1"], ["a1"])]
    nodes += _gelu_nodes("a1", "h", gelu)
    nodes += [node("MatMul", ["h", "w2"], ["m2"]), node("Add", ["m2", "b2"], ["a2"]),
              node("Transpose", ["a2"], ["back"], perm=[0, 3, 1, 2]),
              node("Mul", ["back", "gamma"], ["s"]), node("Add", ["s", "x"], ["y"])]
    outs = [("y", [1, C, H, W])] + ([("n", [1, H, W, C])] if second_norm_reader else [])
    inits = [("dw", rand(C, 1, 7, 7, seed=2)), ("g", rand(C, seed=3) + 1), ("b", rand(C, seed=4)),
             ("w1", rand(C, 4 * C, seed=5)), ("b1", rand(4 * C, seed=6)), ("w2", rand(4 * C, C, seed=7)),
             ("b2", rand(C, seed=8)), ("gamma", rand(C, 1, 1, seed=9))] + GELU_CONSTS
    return make_model(nodes, [("x", [1, C, H, W])], outs, inits)


@pytest.mark.parametrize("gelu", ["div", "half_first"])
def test_channels_last_block_runs_as_per_pixel_kernels(gelu):
    m = _convnext_block(gelu=gelu)
    g = _graph(m, shape=(1, 16, 10, 12))
    assert _ops(g) == [("conv", None), ("channel_norm", None), ("conv", "gelu"), ("conv", None), ("binary", "add")]
    assert "transpose" in [op for op, _ in _ops(_graph(m, shape=(1, 16, 10, 12), skip=("channels_last_chains",)))]
    _check(m, shape=(1, 16, 10, 12), rtol=1e-4, atol=2e-5)


def test_channels_last_chain_keeps_a_tensor_read_in_that_layout():
    """The normalized channels-last tensor is also a graph output: the Transpose stays in front of
    its reader and the outputs keep their layouts."""
    m = _convnext_block(second_norm_reader=True)
    g = _graph(m, shape=(1, 16, 10, 12))
    assert ("channel_norm", None) in _ops(g) and ("transpose", None) in _ops(g)
    _check(m, shape=(1, 16, 10, 12), rtol=1e-4, atol=2e-5)


def test_channels_last_chain_to_a_graph_output():
    """A channels-last tail that never turns back (a TF export's head): the ops move before the
    Transpose, which then gives the output its declared layout."""
    nodes = [node("Conv", ["x", "w"], ["c"]), node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             node("Mul", ["t", "s"], ["u"]), node("Sigmoid", ["u"], ["y"])]
    m = make_model(nodes, [("x", [1, 3, 12, 12])], [("y", [1, 12, 12, 4])],
                   [("w", rand(4, 3, 1, 1)), ("s", rand(4, seed=3))])
    assert _ops(_graph(m))[-1] == ("transpose", None)
    _check(m)


def test_channel_norm_matches_onnxruntime_for_channel_counts_off_the_vector_width():
    for C in (3, 8, 13, 300):
        nodes = [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                 node("LayerNormalization", ["t", "g", "b"], ["n"], axis=-1),
                 node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])]
        m = make_model(nodes, [("x", [1, C, 5, 7])], [("y", [1, C, 5, 7])],
                       [("g", rand(C, seed=1) + 1), ("b", rand(C, seed=2))])
        g = _graph(m, shape=(1, C, 5, 7))
        assert _ops(g) == [("channel_norm", None)]
        x = rand(1, C, 5, 7, scale=4.0) + 10.0  # a mean far from 0 against the spread
        np.testing.assert_allclose(reuserun.InferenceSession(m).run(None, {"x": x})[0], run_ort(m, {"x": x})["y"],
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("C", [2, 8, 21, 300])
def test_softmax_over_channels_runs_per_pixel(C):
    """A Softmax over the channels (axis 1, or axis 3 behind a Transpose to channels-last, as a
    keras2onnx face detector's head writes it) is a per-pixel step: it stays incremental, and
    matches onnxruntime, NaN included."""
    for nodes, out in (([node("Conv", ["x", "w"], ["c"]), node("Softmax", ["c"], ["y"], axis=1)], [1, C, 9, 11]),
                       ([node("Conv", ["x", "w"], ["c"]), node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
                         node("Softmax", ["t"], ["y"], axis=3)], [1, 9, 11, C])):
        m = make_model(nodes, [("x", [1, 3, 9, 11])], [("y", out)], [("w", rand(C, 3, 1, 1, scale=4.0))])
        g = _graph(m, shape=(1, 3, 9, 11))
        assert ("softmax", None) in _ops(g) and g.nodes[[n.op for n in g.nodes].index("softmax")].attrs["axis"] == 1
        _check(m, shape=(1, 3, 9, 11), rtol=1e-5, atol=1e-6)
        s = reuserun.InferenceSession(m)
        x = rand(1, 3, 9, 11, seed=4)
        s.run(None, {"x": x})
        x = x.copy()
        x[0, :, 2, 3] += 1.0
        s.run(None, {"x": x})
        assert [l["computed"] for l in s.stats["layers"] if l["op"] == "softmax"] == [1]  # one pixel
