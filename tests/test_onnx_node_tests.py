"""onnx's own backend node tests (onnx.backend.test), run on reuserun's kernels (strict=True: no
node may fall back to onnxruntime), then once more with a one-ulp edit of the first input, which
must give the same bits as a fresh dense run.

A case is skipped, with its reason, when reuserun's kernels do not take it: an op with no kernel
(it would run in onnxruntime), a non-float32 output, a leading dim above 1 on a 3-D or 4-D input
(reuserun's caches hold one frame; such inputs run in onnxruntime or as streams), scales fed
at run time, an empty tensor, or a model without the default opset. Non-float inputs (axes,
shapes, indices) are parameters, not frames: they become constants. EXCLUDED lists the cases
that run and disagree, each with why."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import reuserun

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the loader's own float casts warn
    from onnx.backend.test.loader import load_model_tests

    CASES = {c.name: c for c in load_model_tests(kind="node") if c.model is not None and c.data_sets}

EXCLUDED: dict[str, str] = {}

# load errors that say the case is outside what reuserun's kernels take
SKIPPED_MODEL_ERRORS = ("batch of",            # a leading dim above 1 on a 3-D or 4-D input
                        "no static shape",     # Resize scales fed at run time
                        "no version of the default ONNX opset",  # training and ai.onnx.ml cases
                        "is not a tensor")     # optional and sequence inputs


def _prepared(case):
    """The case's model with its non-float inputs made constants, the float feeds and the
    expected outputs; or a reason to skip it."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    ins, outs = case.data_sets[0]
    if not all(isinstance(o, np.ndarray) and o.dtype == np.float32 for o in outs):
        return "an output is not float32"
    init = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init]
    feeds = {}
    for vi, value in zip(graph_inputs, ins):
        if not isinstance(value, np.ndarray):
            return "an input is not a tensor"
        if value.dtype == np.float32:
            if value.size == 0:
                return "an empty input (reuserun's tensors hold at least one value)"
            feeds[vi.name] = value
        else:  # listed as an input too, as IR versions below 4 want every initializer
            model.graph.initializer.append(numpy_helper.from_array(value, vi.name))
    if not feeds:
        return "no float32 input"
    return model, feeds, outs


def _session(model, feeds, **kw):
    return reuserun.InferenceSession(model, threads=1, strict=True,
                                     input_shape={k: v.shape for k, v in feeds.items()}, **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_node_case(name):
    if name in EXCLUDED:
        pytest.skip(EXCLUDED[name])
    case = CASES[name]
    got = _prepared(case)
    if isinstance(got, str):
        pytest.skip(got)
    model, feeds, want = got
    try:
        sess = _session(model, feeds)
    except reuserun.UnsupportedOpsError as e:
        pytest.skip(f"not native: {str(e)[:120]}")
    except reuserun.ModelError as e:
        if any(why in str(e) for why in SKIPPED_MODEL_ERRORS):
            pytest.skip(str(e)[:120])
        raise
    outs = sess.run(None, feeds)
    assert len(outs) == len(want)
    for g, w in zip(outs, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=max(case.rtol, 1e-4), atol=max(case.atol, 1e-5))
    # a one-ulp edit, incrementally, against a fresh dense run of the edited input
    first = next(iter(feeds))
    edited = dict(feeds)
    edited[first] = feeds[first].copy()
    flat = edited[first].reshape(-1)
    flat[flat.size // 2] = np.nextafter(flat[flat.size // 2], np.float32(np.inf))
    again = sess.run(None, edited)
    dense = _session(model, edited, policy="dense").run(None, edited)
    for g, w in zip(again, dense):
        assert g.tobytes() == w.tobytes()
