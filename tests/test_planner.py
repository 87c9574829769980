"""The native planner against a plain numpy statement of what it computes: which output
positions a change mask reaches through a sliding window (plus forced bands), and the count and
tight box of a mask. Masks mix long runs, empty stretches and isolated marks so the word-at-a-
time scans meet every case."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reuserun.plan.marks import Marks

from reuserun.kernels import region
from reuserun.plan import planner
from reuserun.plan.geometry import conv_out_len, window_ranges

EXAMPLES = settings.default.max_examples * 3


def random_mask(data, H, W):
    m = np.zeros((H, W), np.uint8)
    for _ in range(data.draw(st.integers(0, 6))):
        y0 = data.draw(st.integers(0, H - 1))
        x0 = data.draw(st.integers(0, W - 1))
        h = data.draw(st.integers(1, H - y0))
        w = data.draw(st.sampled_from([1, 2, 7, 8, 9, 17, W]))
        m[y0:y0 + h, x0:x0 + w] = 1
    if data.draw(st.booleans()):
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        m |= (rng.random((H, W)) < 0.02).astype(np.uint8)
    return m


def reference_reach(m, box, ranges, OH, OW, bands):
    ylo, yhi, xlo, xhi = ranges
    y0, y1, x0, x1 = box
    inside = np.zeros_like(m)
    inside[y0:y1, x0:x1] = m[y0:y1, x0:x1]
    r = np.zeros((OH, OW), np.uint8)
    for oy in range(OH):
        rows = inside[max(ylo[oy], 0):max(yhi[oy] + 1, 0)]
        if not rows.size:
            continue
        cols = rows.any(axis=0)
        for ox in range(OW):
            r[oy, ox] = cols[max(xlo[ox], 0):max(xhi[ox] + 1, 0)].any()
    for b0, b1, b2, b3 in bands:
        r[b0:b1, b2:b3] = 1
    return r


@settings(max_examples=EXAMPLES)
@given(st.data())
def test_window_reach_matches_numpy(data):
    H = data.draw(st.integers(1, 12))
    W = data.draw(st.integers(1, 70))
    ky, kx = data.draw(st.integers(1, min(3, H))), data.draw(st.integers(1, min(5, W)))
    sy, sx = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    py, px = data.draw(st.integers(0, ky - 1)), data.draw(st.integers(0, kx - 1))
    OH, OW = conv_out_len(H, ky, sy, 2 * py, 1), conv_out_len(W, kx, sx, 2 * px, 1)
    ylo, yhi = window_ranges(OH, ky, sy, py, 1)
    xlo, xhi = window_ranges(OW, kx, sx, px, 1)
    m = random_mask(data, H, W)
    count, box = region.scan(m.reshape(-1), W, 0, H, 0, W)
    assert count == int(m.sum())
    if count:
        ys, xs = np.nonzero(m)
        assert box == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    else:
        assert box is None
    bands = []
    if data.draw(st.booleans()):
        b0 = data.draw(st.integers(0, OH - 1))
        b2 = data.draw(st.integers(0, OW - 1))
        bands.append((b0, data.draw(st.integers(b0 + 1, OH)), b2, data.draw(st.integers(b2 + 1, OW))))

    reach = np.zeros(OH * OW, np.uint8)
    pix = np.zeros(OH * OW, np.int32)
    tmp = np.zeros(OH * W, np.uint8)
    plan = planner.PixelPlanner(planner.ReachKind.REACH_WINDOW, OH, OW, 2.0, reach, pix, tmp, ylo, yhi, xlo, xhi, H, W)
    src = Marks()
    src.H, src.W, src.nchanged, src.box, src.mask = H, W, count, box, m.reshape(-1)
    n, _ = plan.plan([src] if count else [], bands)
    if n == -1:  # changed everywhere: the step computes it whole without a list
        assert count == H * W
        return
    want = reference_reach(m, box or (0, 0, 0, 0), (ylo, yhi, xlo, xhi), OH, OW, bands)
    assert sorted(pix[:n].tolist()) == np.flatnonzero(want).tolist()


def test_marks_keep_the_box_and_mask_in_c_fields():
    m = Marks()
    m.H, m.W = 3, 5
    with pytest.raises(ValueError, match="change mask"):
        m.mask = np.zeros(15, np.float32)
    with pytest.raises(ValueError, match="change mask"):
        m.mask = np.zeros(30, np.uint8)[::2]
    m.mask = np.zeros(15, np.uint8)
    assert m.box is None and not m.changed and m.npix == 15
    m.mask[[6, 8, 13]] = 1  # (1, 1), (1, 3), (2, 3)
    m.rescan((0, 3, 0, 5))
    assert (m.nchanged, m.box) == (3, (1, 3, 1, 4))
    m.clear()
    assert (m.nchanged, m.box, int(m.mask.sum())) == (0, None, 0)
    m.mark_all()
    assert (m.nchanged, m.box, int(m.mask.sum())) == (15, (0, 3, 0, 5), 15)


def test_a_window_step_refuses_a_second_spatial_input():
    """Both planners read a window rule's changes from input 0 alone, so a step that would
    need two (none does today) fails when compiled instead of missing the second's changes."""
    from reuserun.ir import Node
    from reuserun.plan.rules import Reach
    from reuserun.runtime.steps import KernelStep
    from reuserun.runtime.storage import Spatial

    a, b, y = (Spatial(n, (1, 4, 6, 6)) for n in "aby")
    lo, hi = np.arange(-1, 5, dtype=np.int32), np.arange(1, 7, dtype=np.int32)
    reach = Reach("window", lo, hi, lo, hi)
    node = Node("conv", "two_inputs", ["a", "b"], ["y"], {})
    KernelStep(node, [a], [y], [], reach)  # one input: fine
    with pytest.raises(ValueError, match="one spatial input"):
        KernelStep(node, [a, b], [y], [], reach)


@pytest.mark.parametrize("thr", [0.0, 0.25])
def test_frame_diff_split_between_threads_matches_one_thread(thr):
    """A frame large enough to be diffed by two threads (in contiguous shares) marks and counts
    what one thread does, NaN and Inf included."""
    rng = np.random.default_rng(7)
    C, npix = 3, 740 * 730
    ref = rng.random((C, npix), dtype=np.float32)
    frame = ref.copy()
    hit = rng.choice(npix, 5000, replace=False)
    frame[rng.integers(0, C, hit.size), hit] += rng.random(hit.size, dtype=np.float32)
    frame[1, hit[:7]] = np.nan
    frame[2, hit[7:10]] = np.inf
    got = []
    for threads in (1, 2):
        mask = np.full(npix, 9, np.uint8)
        got.append((region.diff_frame(frame, ref, thr, mask, threads), mask))
    (n1, m1), (n2, m2) = got
    assert n1 == n2 and n1[1] == 10 and n1[0] > 0
    assert np.array_equal(m1, m2) and set(np.unique(m1)) <= {0, 1}
