"""Variants (what-if runs against the cached reference): exact, and the cache left untouched."""
import threading

import numpy as np
import pytest
from graphgen import edit_frames, random_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from test_session import assert_same_snapshot, snapshot

import reuserun
from reuserun import zoo


def values(sess):
    """Every cached value a later frame reads: caches, kept partial sums, reference frames and
    output copies (change masks are per-run scratch; each run clears them first)."""
    state = sess.state()
    out = [t.tobytes() for t in state["tensors"].values()]
    out += [a.tobytes() for arrays in state["kept"].values() for a in arrays]
    out += [r.tobytes() for r in state["references"].values()] + [m.tobytes() for m in state["outputs"].values()]
    return out

POLICIES = ["auto", "tiles", "rects", "rect"]


def reference_session(classifier, seed: int, **opts):
    """(session with a random 64x64 reference frame run, input name, that frame)."""
    base = np.random.default_rng(seed).standard_normal((1, 3, 64, 64)).astype(np.float32)
    sess = reuserun.InferenceSession(classifier, **opts)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: base})
    return sess, name, base


def dense_outputs(model, frame, name="x"):
    return reuserun.InferenceSession(model, policy="dense", threads=1).run(None, {name: frame})


@settings(max_examples=settings.default.max_examples // 2)
@given(st.data())
def test_random_variants_exact_and_cache_untouched(data):
    d, model, rng, (c, h, w) = random_graph(data, channels=(1, 3), size=(5, 16), ops=(2, 6))
    base = rng.standard_normal((1, c, h, w)).astype(np.float32)
    variants = edit_frames(rng, base, 3, d.choice(["pixels", "rect", "rects", "mixed"]))
    sess = reuserun.InferenceSession(model, policy=d.choice(POLICIES), threads=d.int(1, 2))
    sess.run(None, {"x": base})
    before = values(sess)
    for v in variants:
        # each variant is an edit of the base, not of the variant before it
        diff = (v != base).any(axis=(0, 1))
        ys, xs = np.nonzero(diff)
        bbox = [(ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)] if len(ys) else []
        want = dense_outputs(model, v)
        # found by diffing; declared as a mask; declared as a box (the native loop where the
        # model allows it, else the Python path)
        for changed in (None, diff, bbox):
            out = sess.run_variant(None, {"x": v}, changed=changed)
            for a, b in zip(out, want):
                assert a.tobytes() == b.tobytes()
            assert values(sess) == before
    # the stream carries on from the reference as if no variant had run
    nxt = variants[-1]
    for a, b in zip(sess.run(None, {"x": nxt}), dense_outputs(model, nxt)):
        assert a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def classifier():
    return zoo.resnet_like(64, width=8, classes=10)


def occluded(base, box, value=0.0):
    y0, y1, x0, x1 = box
    v = base.copy()
    v[..., y0:y1, x0:x1] = value
    return v


def test_declared_boxes_and_masks(classifier):
    sess, name, base = reference_session(classifier, 0)
    before = values(sess)
    box = (8, 24, 16, 32)
    v = occluded(base, box)
    want = dense_outputs(classifier, v, name)
    got_box = sess.run_variant(None, {name: v}, changed=[box])
    mask = np.zeros((64, 64), bool)
    mask[8:24, 16:32] = True
    got_mask = sess.run_variant(None, {name: v}, changed=mask)
    for a, b, c in zip(got_box, got_mask, want):
        assert a.tobytes() == c.tobytes() and b.tobytes() == c.tobytes()
    assert sess.stats["mac_fraction"] < 1.0
    # pixels outside a declared region come from the reference, not from the frame
    noisy = v + np.float32(1.0)
    got = sess.run_variant(None, {name: occluded(noisy, box)}, changed=[box])
    for a, c in zip(got, want):
        assert a.tobytes() == c.tobytes()
    # several boxes far apart: every one of them is read
    boxes = [(2, 6, 40, 60), (50, 60, 4, 12), (30, 34, 30, 34)]
    v = base.copy()
    for y0, y1, x0, x1 in boxes:
        v[..., y0:y1, x0:x1] = 0.0
    got = sess.run_variant(None, {name: v}, changed=boxes)
    for a, c in zip(got, dense_outputs(classifier, v, name)):
        assert a.tobytes() == c.tobytes()
    # a batch (the native loop): each variant reads its own boxes alone, though the boxes of
    # the one before lie inside its bounds and its frame differs from the reference everywhere
    decl = [[(20, 28, 20, 28)], [(18, 20, 18, 20), (30, 34, 30, 34)], [(0, 64, 0, 2)]]
    frames = np.concatenate([noisy] * 3)
    got = sess.run_variants(None, {name: frames}, changed=decl)
    for i, spec in enumerate(decl):
        v = base.copy()
        for y0, y1, x0, x1 in spec:
            v[..., y0:y1, x0:x1] = noisy[..., y0:y1, x0:x1]
        assert got[0][i:i + 1].tobytes() == dense_outputs(classifier, v, name)[0].tobytes()
    # the same boxes as a mask (run_variant's Python path): the input's change mask then holds
    # exactly the declared positions (no marks left from earlier runs)
    v = base.copy()
    mask = np.zeros((64, 64), bool)
    for y0, y1, x0, x1 in boxes:
        v[..., y0:y1, x0:x1] = 0.0
        mask[y0:y1, x0:x1] = True
    for a, c in zip(sess.run_variant(None, {name: v}, changed=mask), dense_outputs(classifier, v, name)):
        assert a.tobytes() == c.tobytes()
    marks = sess.state()["masks"][name]
    assert int(np.count_nonzero(marks)) == sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes)
    assert values(sess) == before


def test_spatial_gemm_head_in_variants_and_streams():
    """Flatten -> Gemm over an 8x8 map, then Relu -> Gemm (the native head step lists the
    changed pixels' partial sums): variants exact and the cache untouched, then a stream whose
    frames change the map in places, then not at all."""
    from onnx_helpers import make_model, node, rand, vi
    model = make_model(
        [node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
         node("Flatten", ["r"], ["f"], axis=1), node("Gemm", ["f", "g1"], ["h"], transB=1),
         node("Relu", ["h"], ["hr"]), node("Gemm", ["hr", "g2"], ["y"], transB=1)],
        [vi("x", [1, 3, 16, 16])], [vi("y", [1, 3])],
        [("w", rand(6, 3, 3, 3, seed=1)), ("g1", rand(5, 6 * 8 * 8, seed=2, scale=0.1)), ("g2", rand(3, 5, seed=3))])
    base = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    sess, name = reuserun.InferenceSession(model, threads=1), "x"
    sess.run(None, {name: base})
    assert type(sess.program[-2]).__name__ == "SpatialGemmStep" and sess.program[-2].fast is not None
    before = values(sess)
    for box in [(0, 3, 0, 3), (5, 12, 9, 16), (0, 16, 0, 16)]:
        v = occluded(base, box, 2.0)
        for a, b in zip(sess.run_variant(None, {name: v}, changed=[box]), dense_outputs(model, v, name)):
            assert a.tobytes() == b.tobytes()
        assert values(sess) == before
    for v in [occluded(base, (4, 6, 4, 12), -1.0), occluded(base, (10, 16, 0, 3), 3.0)] * 2:
        for a, b in zip(sess.run(None, {name: v}), dense_outputs(model, v, name)):
            assert a.tobytes() == b.tobytes()


def test_batches_on_parallel_forks_match_one_by_one(classifier):
    sess, name, base = reference_session(classifier, 1, threads=2)
    boxes = [(y, y + 16, x, x + 16) for y in range(0, 49, 16) for x in range(0, 49, 24)]
    batch = np.concatenate([occluded(base, b) for b in boxes])
    serial = sess.run_variants(None, {name: batch}, changed=[[b] for b in boxes])
    parallel = sess.run_variants(None, {name: batch}, changed=[[b] for b in boxes], workers=2)
    for i in range(len(boxes)):
        want = dense_outputs(classifier, batch[i:i + 1], name)
        for s, p, w in zip(serial, parallel, want):
            assert s[i:i + 1].tobytes() == w.tobytes() and p[i:i + 1].tobytes() == w.tobytes()
    # a new reference makes the kept forks stale: they take the session's cache again
    forks, _ = sess.variant_forks(1)  # the fork the parallel batch kept
    base2 = base + np.float32(0.5)
    sess.run(None, {name: base2})
    again = sess.run_variants(None, {name: np.concatenate([occluded(base2, b) for b in boxes[:2]])},
                              changed=[[b] for b in boxes[:2]], workers=2)
    assert [id(f) for f in sess.variant_forks(1)[0]] == [id(f) for f in forks]
    # the session and its fork each ran with half of the threads; the session has them all again
    assert sess.threads == 2 and [f.threads for f in forks] == [1]
    for i, b in enumerate(boxes[:2]):
        want = dense_outputs(classifier, occluded(base2, b), name)
        assert again[0][i:i + 1].tobytes() == want[0].tobytes()


def test_threads_share_one_session(classifier):
    sess, name, base = reference_session(classifier, 2, threads=1)
    boxes = [(y, y + 8, y, y + 8) for y in range(0, 56, 8)]
    results, errors = {}, []

    def work(b):
        try:
            results[b] = sess.run_variant(None, {name: occluded(base, b)}, changed=[b])[0]
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for b in boxes:
        assert results[b].tobytes() == dense_outputs(classifier, occluded(base, b), name)[0].tobytes()


def test_fork_is_independent(classifier):
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(2))
    sess = reuserun.InferenceSession(classifier)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: a})
    twin = sess.fork()
    before = snapshot(sess)
    out = twin.run(None, {name: b})
    assert out[0].tobytes() == dense_outputs(classifier, b, name)[0].tobytes()
    assert twin.stats["mac_fraction"] <= 1.0
    assert_same_snapshot(snapshot(sess), before)


def test_variant_errors_leave_state(classifier):
    rng = np.random.default_rng(4)
    base = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    sess = reuserun.InferenceSession(classifier)
    name = sess.get_inputs()[0].name
    with pytest.raises(reuserun.InputError, match="reference"):
        sess.run_variant(None, {name: base})
    sess.run(None, {name: base})
    before = values(sess)
    bad = base.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(reuserun.InputError, match="NaN"):
        sess.run_variant(None, {name: bad})
    with pytest.raises(reuserun.InputError, match="NaN"):  # inside the declared box: read, rejected
        sess.run_variant(None, {name: bad}, changed=[(2, 6, 2, 6)])
    inside = np.zeros((64, 64), bool)
    inside[3, 2:5] = True
    with pytest.raises(reuserun.InputError, match="NaN"):  # so too declared as a mask
        sess.run_variant(None, {name: bad}, changed=inside)
    assert values(sess) == before
    # outside it: never read (the reference's value stands), so the variant is the base's
    out = sess.run_variant(None, {name: bad}, changed=[(10, 12, 10, 12)])
    assert out[0].tobytes() == dense_outputs(classifier, base, name)[0].tobytes()
    with pytest.raises(reuserun.InputError, match="outside"):
        sess.run_variant(None, {name: base}, changed=[(0, 80, 0, 8)])
    for malformed in [(0, 4, 0, 4), [(0, 4, 0)], [("a", 4, 0, 4)], [[0, 4, 0, 4, 5]]]:
        with pytest.raises(reuserun.InputError, match="changed boxes"):
            sess.run_variant(None, {name: base}, changed=malformed)
        with pytest.raises(reuserun.InputError, match="changed boxes"):  # the Python path too
            reuserun.InferenceSession.run_variant(sess, None, {name: base.astype(np.float64)}, changed=malformed)
    with pytest.raises(reuserun.InputError, match="shape"):
        sess.run_variant(None, {name: base}, changed=np.ones((8, 8), bool))
    with pytest.raises(reuserun.InputError, match="declarations for 1 variants"):
        sess.run_variants(None, {name: base}, changed=[[(0, 1, 0, 1)]] * 3)
    # a batch of declared variants (the native loop): one bad value rejects the batch
    batch = np.concatenate([base, bad, base])
    with pytest.raises(reuserun.InputError, match="variant 1 holds NaN"):
        sess.run_variants(None, {name: batch}, changed=[[(0, 4, 0, 4)], [(2, 6, 2, 6)], [(9, 9, 0, 3)]])
    with pytest.raises(reuserun.InputError, match="outside"):
        sess.run_variants(None, {name: batch}, changed=[[(0, 4, 0, 4)], [(10, 12, 10, 12)], [(60, 70, 0, 3)]])
    with pytest.raises(reuserun.InputError, match="shape"):
        sess.run_variants(None, {name: batch[:, :2]}, changed=[[(0, 4, 0, 4)]] * 3)
    assert values(sess) == before
    out = sess.run_variants(None, {name: batch}, changed=[[(0, 4, 0, 4)], [(10, 12, 10, 12)], []])
    for i in range(3):  # an empty declaration: the reference's outputs
        assert out[0][i:i + 1].tobytes() == dense_outputs(classifier, base, name)[0].tobytes()
    assert values(sess) == before


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("policy", ["auto", "tiles"])
def test_occlusion_map_matches_brute_force(classifier, workers, policy):
    """The map from one session or from forks in parallel threads (each taking chunks of the
    windows), in the native loop (auto) or one run_variant a window (tiles): the same bits, and
    the brute-force map within float tolerance."""
    from reuserun.occlusion import occlusion_map, window_starts
    rng = np.random.default_rng(5)
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    sess = reuserun.InferenceSession(classifier, policy=policy, threads=1)
    res = occlusion_map(sess, x, patch=16, stride=12, target=3, workers=workers)
    alone = occlusion_map(reuserun.InferenceSession(classifier, policy="dense", threads=1), x, patch=16, stride=12,
                          target=3, workers=1)
    assert res["heat"].tobytes() == alone["heat"].tobytes()
    name = sess.get_inputs()[0].name
    base = dense_outputs(classifier, x, name)[0].reshape(-1)[3]
    heat, count = np.zeros((64, 64)), np.zeros((64, 64))
    starts = window_starts(64, 16, 12)
    assert starts == [0, 12, 24, 36, 48]
    for y in starts:
        for xx in starts:
            v = occluded(x, (y, y + 16, xx, xx + 16))
            heat[y:y + 16, xx:xx + 16] += base - dense_outputs(classifier, v, name)[0].reshape(-1)[3]
            count[y:y + 16, xx:xx + 16] += 1
    want = np.where(count > 0, heat / np.maximum(count, 1), 0)
    np.testing.assert_allclose(res["heat"], want, rtol=1e-5, atol=1e-5)
    assert res["windows"] == 25 and 0 < res["mac_fraction"] < 1
    with pytest.raises(ValueError, match="target"):
        occlusion_map(sess, x, target=10)


def test_occlusion_cli_writes_png_and_npy(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from reuserun import cli
    img = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(6).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    prefix = tmp_path / "out"
    assert cli.main(["occlusion", "builtin:resnet", str(img), "--size", "64", "--patch", "16", "--stride", "16",
                     "--out", str(prefix), "--no-progress"]) == 0
    heat = np.load(str(prefix) + ".npy")
    assert heat.shape == (64, 64) and np.isfinite(heat).all() and np.abs(heat).max() > 0
    assert (tmp_path / "out.png").stat().st_size > 1000
    assert "16 windows" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot read image"):
        cli.main(["occlusion", "builtin:resnet", str(tmp_path / "missing.png"), "--size", "64"])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_journal_restores_every_saved_value_latest_save_first(data):
    """The undo log behind variants: row saves (strided views included), whole float32 arrays
    (kept as one row of scratch) and whole arrays of other layouts (kept as copies), in any
    order and overlapping, each followed by an overwrite; restore() gives back the values as
    they were before the first save."""
    from reuserun.runtime.journal import Journal
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    grid = rng.standard_normal((12, 10)).astype(np.float32)  # rows of 10, or of 4 inside a view
    flat = rng.standard_normal(7).astype(np.float32)
    other = rng.integers(-9, 9, (3, 5)).astype(np.int64)  # not float32: saved as a copy
    strided = grid[:, ::2]  # not contiguous: saved as a copy too
    before = [a.copy() for a in (grid, flat, other)]
    journal = Journal()
    for _ in range(data.draw(st.integers(1, 12), label="saves")):
        kind = data.draw(st.sampled_from(["rows", "rows_view", "flat", "other", "strided"]))
        if kind.startswith("rows"):
            view = grid if kind == "rows" else grid[:, 3:7]
            pix = np.array(sorted(data.draw(st.sets(st.integers(0, 11), min_size=1))), np.int32)
            journal.rows(view, pix, len(pix))
            view[pix] = rng.standard_normal((len(pix), view.shape[1]))
        else:
            arr = {"flat": flat, "other": other, "strided": strided}[kind]
            journal.whole(arr)
            arr[...] = rng.integers(-9, 9, arr.shape)
    journal.restore()
    for now, was in zip((grid, flat, other), before):
        assert now.tobytes() == was.tobytes()
