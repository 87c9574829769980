"""The command line: bench on the built-in default, bench on a file, info, and errors; the bench loop."""
import json

import numpy as np
import pytest

from reuserun import cli, zoo
from reuserun.bench import interleaved, thread_scaling


def test_bench_builtin_default(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--frames", "3", "--size", "64", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "speedup" in text and "mac_frac" in text and "auto" in text and "dense" in text
    res = json.loads(out.read_text())
    assert {r["policy"] for r in res["results"]} == {"auto", "auto+ort", "dense"}
    for r in res["results"]:
        assert r["max_abs_err"] < 1e-3 and 0 < r["mac_fraction"] <= 1


def test_bench_model_file_and_policies(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(zoo.unet_like(64).SerializeToString())
    assert cli.main(["bench", str(path), "--frames", "3", "--no-progress", "--policy", "rect",
                     "--policy", "tiles", "--source", "synthetic:object", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "rect" in text and "tiles" in text


def test_info(capsys):
    assert cli.main(["info", "--size", "64"]) == 0
    text = capsys.readouterr().out
    assert "supported" in text and "conv" in text and "total MACs" in text


def test_bad_model_path():
    with pytest.raises(SystemExit, match="not found"):
        cli.main(["bench", "/no/such/model.onnx", "--frames", "2", "--no-progress"])


def test_unknown_source(capsys):
    assert cli.main(["bench", "--source", "webcam", "--frames", "2", "--size", "64", "--no-progress"]) == 2
    assert "unknown source" in capsys.readouterr().err


def test_bench_1d_model_on_audio_windows(tmp_path, capsys):
    out = tmp_path / "kws.json"
    assert cli.main(["bench", "builtin:kws", "--size", "4000", "--frames", "4", "--no-progress",
                     "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["source"].startswith("synthetic-audio")
    auto = next(r for r in res["results"] if r["policy"] == "auto")
    assert auto["max_abs_err"] < 1e-4 and auto["mac_fraction"] < 0.5
    assert cli.main(["bench", "builtin:kws", "--size", "4000", "--frames", "2", "--source", "audio:"]) == 2
    assert "audio source needs a path" in capsys.readouterr().err


def test_interleaved_hands_each_runner_its_own_copy_of_a_frame():
    # shared, the frame is read from memory by whichever runner goes first: on a still frame
    # that read was most of a runner's time, and the seeded order favoured one runner
    frames = [np.full((2, 3), i, np.float32) for i in range(5)]
    seen = {"a": [], "b": []}
    interleaved(frames, {k: (lambda f, k=k: seen[k].append(f)) for k in seen})
    for got in seen.values():
        assert all(g is not f and np.array_equal(g, f) for g, f in zip(got, frames))
    assert all(a is not b for a, b in zip(seen["a"], seen["b"]))
    boxes = [(0, 1, 0, 1)]
    interleaved(boxes, {"a": lambda b: seen["a"].append(b)})
    assert seen["a"][-1] is boxes[0]  # only arrays are copied


def test_thread_scaling_times_both_runtimes_at_both_counts():
    from reuserun import sources
    frames = list(sources.synthetic_stream((1, 3, 64, 64), "full", frames=3))
    r = thread_scaling(zoo.default_model(64), frames, threads=2)
    assert set(r["ms"]) == {"reuserun_1", "reuserun_2", "ort_1", "ort_2"} and min(r["ms"].values()) > 0
    assert r["reuserun_scaling"] == r["ms"]["reuserun_1"] / r["ms"]["reuserun_2"]
    assert r["ort_scaling"] == r["ms"]["ort_1"] / r["ms"]["ort_2"]


def test_profile_lists_steps_beside_onnxruntime(tmp_path, capsys):
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    assert cli.main(["profile", "builtin:mobilenet", "--size", "64", "--frames", "3", "--threads", "1",
                     "--json", str(out), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "GMAC/s" in text and "onnxruntime" in text
    rep = json.loads(out.read_text())
    assert rep["frames"] == 3 and rep["steps"] and png.stat().st_size > 0
    assert rep["matched"] > 0  # onnxruntime's per-node times found for some steps
    assert abs(sum(r["ms"] for r in rep["steps"]) - rep["steps_ms"]) < 1e-6
    conv = [r for r in rep["steps"] if r["op"] == "conv"]
    assert conv and all(r["macs"] > 0 and r["gmac_s"] > 0 for r in conv)


def test_bench_feeds_a_channels_last_model_as_it_declares(tmp_path, capsys):
    from onnx_helpers import make_model, node, rand
    m = make_model([node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                    node("Conv", ["t", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [("x", [1, "H", "W", 3])], [("y", [1, 4, "H", "W"])], [("w", rand(4, 3, 3, 3))])
    path, out = tmp_path / "nhwc.onnx", tmp_path / "r.json"
    path.write_bytes(m.SerializeToString())
    assert cli.main(["bench", str(path), "--size", "64", "--frames", "4", "--policy", "auto", "--no-progress",
                     "--source", "synthetic:object", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"][0]
    assert res["max_abs_err"] < 1e-4 and res["mac_fraction"] < 0.5


def test_serve_runs_streams_through_the_pool(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert cli.main(["serve", "--size", "64", "--streams", "3", "--frames", "3", "--workers", "2",
                     "--no-progress", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert len(got["streams"]) == 3 and all(s["frames"] == 3 for s in got["streams"].values())
    assert "frames/s" in capsys.readouterr().out
