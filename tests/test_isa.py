"""One x86-64 build carries the native modules for several ISA levels (reuserun/isa.py). Each
level this CPU runs is forced through REUSERUN_ISA in a fresh process, where every frame of a
stream must be bit-identical to that level's own dense run and close to onnxruntime."""
import os
import subprocess
import sys
import textwrap

import pytest

from reuserun import isa

# the folder holding the reuserun this test imported (the source tree, or site-packages in CI)
HOME = os.path.dirname(os.path.dirname(os.path.abspath(isa.__file__)))

STREAM = textwrap.dedent("""
    import numpy as np, onnxruntime as ort, reuserun
    from reuserun import zoo
    model = zoo.mobilenet_v3_like(size=64, seed=3).SerializeToString()
    auto = reuserun.InferenceSession(model, threads=2)
    dense = reuserun.InferenceSession(model, threads=2, policy="dense")
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = auto.get_inputs()[0].name
    rng = np.random.default_rng(0)
    frame = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    for i in range(8):
        if i % 3 == 1:  # one ulp, one pixel
            frame = frame.copy()
            frame[0, 1, 9, 40] = np.nextafter(frame[0, 1, 9, 40], np.float32(np.inf))
        elif i % 3 == 2:  # an object
            frame = frame.copy()
            frame[0, :, 20 + i:30 + i, 10:22] = rng.standard_normal((3, 10, 12))
        outs = auto.run(None, {name: frame})
        for a, d, r in zip(outs, dense.run(None, {name: frame}), ref.run(None, {name: frame})):
            assert a.tobytes() == d.tobytes(), i
            np.testing.assert_allclose(a, r, rtol=1e-3, atol=1e-4 * float(np.abs(r).max()))
    print("level", reuserun.isa.chosen())
""")


def run_forced(level: str, code: str) -> subprocess.CompletedProcess:
    """code in a fresh process that loads the same reuserun with REUSERUN_ISA=level (run from /,
    so that no source tree in the working folder shadows it)."""
    env = dict(os.environ, REUSERUN_ISA=level, PYTHONPATH=os.pathsep.join(
        p for p in [HOME, os.environ.get("PYTHONPATH", "")] if p))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd="/")


levels = [lv for lv in isa.available() if lv in isa.supported()]


@pytest.mark.skipif(len(isa.available()) < 2, reason="a build for one -march carries no levels to choose")
@pytest.mark.parametrize("level", levels or ["none"])
def test_every_level_this_cpu_runs_is_exact_against_its_own_dense_run(level):
    got = run_forced(level, STREAM)
    assert got.returncode == 0, got.stderr[-2000:]
    assert f"level {level}" in got.stdout


@pytest.mark.skipif(not isa.available(), reason="a build for one -march carries no levels to choose")
def test_the_best_level_the_cpu_runs_is_chosen_unless_one_is_forced():
    forced = os.environ.get("REUSERUN_ISA")
    best = max((lv for lv in isa.available() if lv in isa.supported()), key=isa.LEVELS.index)
    assert isa.chosen() == (forced or best)


@pytest.mark.skipif(not isa.available(), reason="a build for one -march carries no levels to choose")
def test_an_unknown_or_unrunnable_level_is_refused_in_one_line():
    got = run_forced("x86-64-v9", "import reuserun")
    assert got.returncode != 0 and "REUSERUN_ISA must be one of" in got.stderr
    missing = [lv for lv in isa.LEVELS if lv not in isa.supported()]
    if missing:
        got = run_forced(missing[0], "import reuserun")
        assert got.returncode != 0 and "this CPU lacks it" in got.stderr
