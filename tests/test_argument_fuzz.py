"""Fuzz of arguments: every constructor argument, run's and run_variant's arguments and every
numeric CLI option over edge values (0, negative, huge, NaN, Inf, wrong types). Each either
works or raises one clear one-line error; none may crash the process or leave the session
unable to go on. RR_FUZZ sets the number of examples."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_helpers import make_model, node, rand

import reuserun
from reuserun import cli

EXAMPLES = int(os.environ.get("RR_FUZZ", 150))
FUZZ = settings(max_examples=EXAMPLES)

EDGES = [0, 1, -1, 2, 7, 2**31, -2**31, 2**63, 1e300, -0.0, 0.5, float("nan"), float("inf"), float("-inf"),
         True, False, None, "", "auto", "1", [], [1], (1, 3, 8, 8), {}, b"x", object(), np.int64(3),
         np.float32(np.nan)]
ERRORS = (ValueError, TypeError, reuserun.InputError, reuserun.ModelError)


def _model():
    return make_model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                       node("GlobalAveragePool", ["c"], ["g"]),
                       node("Mul", ["c", "g"], ["y"])],
                      [("x", [1, 3, "H", "W"])], [("y", [1, 4, "H", "W"])], [("w", rand(4, 3, 3, 3))])


MODEL = _model()
ARGS = ["policy", "threshold", "threads", "tile", "input_shape", "frame_stack", "layer_thresholds", "shift",
        "dense_backend"]


def _one_line(e: BaseException) -> None:
    text = str(e)
    assert text and "\n" not in text, repr(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(ARGS), st.sampled_from(EDGES), max_size=3))
def test_constructor_edges(kwargs):
    try:
        sess = reuserun.InferenceSession(MODEL, **kwargs)
    except ERRORS as e:
        _one_line(e)
        return
    x = rand(1, 3, 8, 8)
    try:
        first = sess.run(None, {"x": x})
    except ERRORS as e:  # e.g. an input_shape the frame does not match
        _one_line(e)
        return
    x[0, 0, 2, 2] += 1.0
    second = sess.run(None, {"x": x})
    assert first[0].shape == second[0].shape


@FUZZ
@given(output_names=st.sampled_from(EDGES + [["y"], ["y", "y"], ["nope"]]),
       feed=st.sampled_from(["ok", "name", "list", "f64", "shape", "nan", "none", "scalar", "empty"]))
def test_run_edges(output_names, feed):
    sess = reuserun.InferenceSession(MODEL, input_shape=(1, 3, 8, 8))
    x = rand(1, 3, 8, 8)
    before = sess.run(None, {"x": x})[0]
    bad = {"ok": {"x": x}, "name": {"z": x}, "list": {"x": x.tolist()}, "f64": {"x": x.astype(np.float64)},
           "shape": {"x": x[..., :4]}, "nan": {"x": np.full_like(x, np.nan)}, "none": None,
           "scalar": {"x": np.float32(1)}, "empty": {"x": np.zeros((1, 3, 0, 8), np.float32)}}[feed]
    try:
        sess.run(output_names, bad)
    except ERRORS as e:
        _one_line(e)
    # whatever happened, the session goes on and a still frame gives the same outputs
    assert sess.run(None, {"x": x})[0].tobytes() == before.tobytes()


BOX_EDGES = st.one_of(
    st.tuples(*[st.sampled_from([0, 1, 4, 8, 9, -1, 2**31, 2**40]) for _ in range(4)]),
    st.sampled_from([(0, 8, 0, 8), (3, 3, 0, 8), (0.5, 2, 0, 2), ("a", 1, 2, 3), (1, 2, 3), None, (np.nan, 1, 2, 3)]))


@FUZZ
@given(changed=st.one_of(st.lists(BOX_EDGES, max_size=3), st.sampled_from(EDGES)),
       mask=st.booleans())
def test_run_variant_edges(changed, mask):
    sess = reuserun.InferenceSession(MODEL, input_shape=(1, 3, 8, 8))
    x = rand(1, 3, 8, 8)
    before = sess.run(None, {"x": x})[0]
    edited = x.copy()
    edited[0, :, 2:4, 2:4] = 0.25
    if mask:
        flag = bool(changed) if np.isscalar(changed) else True
        changed = np.zeros((8, 8), bool) if changed is None else np.resize(np.asarray(flag), (8, 8))
    try:
        sess.run_variant(None, {"x": edited}, changed=changed)
    except ERRORS as e:
        _one_line(e)
    assert sess.run(None, {"x": x})[0].tobytes() == before.tobytes()


NUMERIC_OPTIONS = {
    "bench": ["--frames", "--threshold", "--threads", "--tile", "--size", "--seed"],
    "tune": ["--frames", "--max-error", "--threads", "--size", "--seed"],
    "info": ["--size"],
    "occlusion": ["--patch", "--stride", "--target", "--baseline", "--size", "--threads", "--workers"],
}
TEXT_EDGES = ["0", "-1", "1", "nan", "inf", "-inf", "1e400", "abc", "", "99999999999999999999", "2.5", "-0"]


@pytest.mark.parametrize("command", sorted(NUMERIC_OPTIONS))
def test_cli_numeric_options_parse_or_refuse(command, capsys):
    """Each value either parses to something the command can use or exits 2 with argparse's
    one-line message; nothing is run here."""
    parser = cli.build_parser()
    positional = {"occlusion": ["builtin:mobilenet", "img.png"]}.get(command, [])
    for option in NUMERIC_OPTIONS[command]:
        for text in TEXT_EDGES:
            try:
                args = parser.parse_args([command, *positional, option, text])
            except SystemExit as e:
                assert e.code == 2
                assert "Traceback" not in capsys.readouterr().err
                continue
            value = getattr(args, option[2:].replace("-", "_"))
            if isinstance(value, float):
                assert np.isfinite(value), (option, text)
            if option in ("--frames", "--tile", "--size", "--patch", "--stride", "--workers"):
                assert value >= 1, (option, text)
            if option in ("--threshold", "--threads"):
                assert value >= 0, (option, text)
            if option == "--max-error":
                assert value > 0, (option, text)
