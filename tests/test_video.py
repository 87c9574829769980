"""Camera-like video through PyAV: exact reuse buys little there, thresholds pay, error bounded."""
import numpy as np
import pytest

import reuserun
from reuserun import cli, zoo
from reuserun.streams import frames_from_spec

pytestmark = pytest.mark.video

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    import camera_clip
    return camera_clip.write_clip(str(tmp_path_factory.mktemp("v") / "clip.mp4"), 40, 96, 96)


def test_video_frames_decode_at_the_model_size(clip):
    frames = frames_from_spec(f"video:{clip}", (1, 3, 64, 80), 10)
    assert len(frames) == 10 and frames[0].shape == (1, 3, 64, 80) and frames[0].dtype == np.float32
    gray = frames_from_spec(f"video:{clip}", (1, 1, 64, 64), 3)
    assert gray[0].shape == (1, 1, 64, 64)
    changed = np.mean([(frames[i] != frames[i - 1]).any(axis=1).mean() for i in range(1, 10)])
    assert changed > 0.3  # compression and sensor noise touch most pixels every frame


def test_thresholds_pay_on_camera_video(clip):
    model = zoo.resnet_like(96, width=8)
    frames = frames_from_spec(f"video:{clip}", (1, 3, 96, 96), 40)
    dense = reuserun.InferenceSession(model, policy="dense")
    exact = reuserun.InferenceSession(model)
    approx = reuserun.InferenceSession(model, threshold=0.06)
    fe, fa, err = [], [], []
    for f in frames:
        ref = dense.run(None, {"images": f})[0]
        exact.run(None, {"images": f})
        out = approx.run(None, {"images": f})[0]
        fe.append(exact.stats["mac_fraction"])
        fa.append(approx.stats["mac_fraction"])
        err.append(float(np.linalg.norm(out - ref) / np.linalg.norm(ref)))
    assert np.mean(fa[1:]) < 0.8 * np.mean(fe[1:])
    assert max(err) < 0.2 and np.mean(err[20:]) < 2 * np.mean(err[1:20]) + 0.01


def test_bench_cli_on_video(clip, capsys):
    assert cli.main(["bench", "builtin:resnet", "--size", "96", "--source", f"video:{clip}", "--frames", "4",
                     "--threshold", "0.05", "--no-progress"]) == 0
    assert "speedup" in capsys.readouterr().out


def test_bench_takes_tuned_thresholds(clip, tmp_path, capsys):
    """`tune` writes a file that `bench --thresholds` loads, input threshold included."""
    import json
    spec = tmp_path / "thr.json"
    assert cli.main(["tune", "builtin:resnet", "--size", "64", "--source", f"video:{clip}", "--frames", "4",
                     "--max-error", "0.05", "--out", str(spec), "--no-progress"]) == 0
    tuned = json.loads(spec.read_text())
    runs = {}
    for name, extra in (("exact", []), ("tuned", ["--thresholds", str(spec)])):
        out = tmp_path / f"{name}.json"
        assert cli.main(["bench", "builtin:resnet", "--size", "64", "--source", f"video:{clip}", "--frames", "4",
                         "--policy", "auto", "--no-progress", "--json", str(out), *extra]) == 0
        runs[name] = json.loads(out.read_text())
    assert runs["tuned"]["threshold"] == tuned["threshold"] > 0
    assert runs["tuned"]["results"][0]["mac_fraction"] < runs["exact"]["results"][0]["mac_fraction"]
    assert cli.main(["bench", "builtin:resnet", "--size", "64", "--frames", "2", "--no-progress",
                     "--thresholds", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_mean_std_preprocessing(clip):
    raw = frames_from_spec(f"video:{clip}", (1, 3, 32, 32), 2)
    norm = frames_from_spec(f"video:{clip}", (1, 3, 32, 32), 2, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.25))
    np.testing.assert_allclose(norm[1][0, 2], (raw[1][0, 2] - 0.3) / 0.25, rtol=1e-6)


def test_audio_file_becomes_sliding_windows(tmp_path):
    """A 44.1 kHz stereo file, decoded and resampled to 16 kHz mono by PyAV, as windows one hop
    apart; the KWS net finds the hop and stays exact."""
    from reuserun.streams import speech_like
    sig = speech_like(44100, seed=4)
    path = str(tmp_path / "speech.wav")
    with av.open(path, "w") as out:
        stream = out.add_stream("pcm_s16le", rate=44100)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray((np.stack([sig, sig]) * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    frames = frames_from_spec(f"audio:{path}@320", (1, 1, 4000), 5)
    assert len(frames) == 5 and frames[0].shape == (1, 1, 4000)
    assert np.array_equal(frames[1][0, 0, :-320], frames[0][0, 0, 320:])
    assert 0.05 < np.abs(frames[0]).max() <= 1.0
    model = zoo.kws_1d(4000)
    sess, dense = reuserun.InferenceSession(model), reuserun.InferenceSession(model, policy="dense")
    for f in frames:
        assert sess.run(None, {"audio": f})[0].tobytes() == dense.run(None, {"audio": f})[0].tobytes()
    assert sess.stats["shift"] == (0, 320)


def test_audio_source_errors(clip):
    with pytest.raises(ValueError, match="audio"):
        frames_from_spec(f"audio:{clip}", (1, 1, 4000), 2)  # a video with no audio stream
    with pytest.raises(ValueError, match=r"\(1, 1, L\)"):
        frames_from_spec("synthetic-audio", (1, 3, 64, 64), 2)
