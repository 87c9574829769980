"""The Atari path: policy exports, ALE frames, the benchmark script on a few steps."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import reuserun
from reuserun import streams

ROOT = Path(__file__).resolve().parents[1]


def test_export_policies(tmp_path):
    import export_policies
    paths = export_policies.export_all(tmp_path, actions=4, mark_stack=True)
    assert len(paths) == 7
    dqn = reuserun.InferenceSession(str(paths[-1]))
    assert dqn.frame_stack_inputs == {"frames"}  # declared in the model's metadata
    small = reuserun.InferenceSession(str(tmp_path / "seed_policy_d4_20_40.onnx"))
    x = np.random.default_rng(0).random((1, 1, 53, 40), dtype=np.float32)
    p = small.run(None, {"frame": x})[0]
    assert p.shape == (1, 4) and abs(float(p.sum()) - 1.0) < 1e-5


def test_seed_preprocessing_is_striding():
    obs = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    d2 = streams.atari_preprocess(obs, 1, 105, 80)
    d4 = streams.atari_preprocess(obs, 1, 53, 40)
    assert np.array_equal(d2[0, 0], obs[::2, ::2, 0] / np.float32(255))
    assert np.array_equal(d4[0, 0], obs[::4, ::4, 0] / np.float32(255))


@pytest.mark.atari
def test_atari_source_and_bench_script(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("ale_py")
    frames = streams.frames_from_spec("atari:Pong", (1, 1, 53, 40), 4, seed=0)
    assert len(frames) == 4 and frames[0].shape == (1, 1, 53, 40)
    spec = importlib.util.spec_from_file_location("atari_bench", ROOT / "bench" / "atari.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["atari_bench"] = bench
    spec.loader.exec_module(bench)
    assert bench.main(["--nets", "d4-20-40,dqn", "--games", "Pong", "--steps", "15", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "atari.md").read_text()
    assert "| Pong |" in text and "**Mean**" in text and "auto_stack" in text
    assert (tmp_path / "atari_d4-20-40.png").exists()
