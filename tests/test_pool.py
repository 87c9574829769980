"""StreamPool: many streams, each pinned to a worker that holds its session; every stream's
outputs must be bit-identical to a dense single session fed the same frames."""
from concurrent.futures import CancelledError

import numpy as np
import pytest

import reuserun
from reuserun import sources, zoo
from reuserun.pool import StreamPool


@pytest.fixture(scope="module")
def model():
    return zoo.mobilenet_v3_like(size=64, seed=4).SerializeToString()


def stream_frames(seed: int, n: int) -> list:
    return [f.astype(np.float32) for f in sources.synthetic_stream((1, 3, 64, 64), "object", n, seed)]


def dense_outputs(model, frames) -> list:
    dense = reuserun.InferenceSession(model, policy="dense", threads=1)
    name = dense.get_inputs()[0].name
    return [dense.run(None, {name: f}) for f in frames]


def test_every_stream_matches_a_dense_session_bit_for_bit(model):
    frames = {sid: stream_frames(sid, 6) for sid in range(5)}
    with StreamPool(model, workers=2, threads=1) as pool:
        futures = {sid: [] for sid in frames}
        for i in range(6):  # the streams' frames interleaved, as cameras deliver them
            for sid, fs in frames.items():
                futures[sid].append(pool.submit(sid, fs[i]))
        got = {sid: [f.result() for f in fs] for sid, fs in futures.items()}
        stats = pool.stats()
    for sid, fs in frames.items():
        for outs, want in zip(got[sid], dense_outputs(model, fs)):
            assert all(a.tobytes() == b.tobytes() for a, b in zip(outs, want)), sid
    assert {s["frames"] for s in stats["streams"].values()} == {6}
    assert sorted(w["streams"] for w in stats["workers"]) == [2, 3]  # least loaded first
    assert all(s["mac_fraction"] is not None and s["latency_ms"]["p50"] > 0 for s in stats["streams"].values())


def test_a_refused_frame_fails_alone_and_the_stream_goes_on_exactly(model):
    frames = stream_frames(7, 4)
    bad = frames[1].copy()
    bad[0, 0, 3, 3] = np.nan
    with StreamPool(model, workers=1, threads=1) as pool:
        assert pool.run("cam", frames[0]) is not None
        with pytest.raises(reuserun.InputError, match="NaN"):
            pool.run("cam", bad)
        outs = [pool.run("cam", f) for f in frames[1:]]
        assert pool.stats()["streams"]["cam"]["failed"] == 1
    for got, want in zip(outs, dense_outputs(model, frames)[1:]):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))


def test_drop_oldest_cancels_what_a_full_stream_cannot_hold(model):
    frames = stream_frames(3, 12)
    with StreamPool(model, workers=1, threads=1, max_pending=1, when_full="drop_oldest") as pool:
        futures = [pool.submit("live", f) for f in frames]
        answered = {}
        for i, fut in enumerate(futures):
            try:
                answered[i] = fut.result()
            except CancelledError:
                pass
        stats = pool.stats()["streams"]["live"]
    assert stats["frames"] == len(answered) and stats["dropped"] == len(frames) - len(answered) > 0
    assert len(frames) - 1 in answered  # the newest frame is never the one dropped
    want = dense_outputs(model, frames)
    for i, outs in answered.items():
        assert all(a.tobytes() == b.tobytes() for a, b in zip(outs, want[i]))


def test_a_closed_stream_starts_again_fresh(model):
    frames = stream_frames(5, 3)
    with StreamPool(model, workers=2, threads=1) as pool:
        pool.run("a", frames[0])
        pool.close("a")
        assert "a" not in pool.stats()["streams"]
        outs = pool.run("a", frames[2])
        with pytest.raises(reuserun.InputError, match="no stream"):
            pool.close("b")
    want = dense_outputs(model, [frames[2]])[0]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(outs, want))


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "spark"}, "backend must be"),
    ({"when_full": "wait"}, "when_full must be"),
    ({"max_pending": 0}, "max_pending must be"),
    ({"workers": 0}, "workers must be"),
    ({"threads": 2, "policy": "sideways"}, "policy"),
])
def test_bad_arguments_are_refused_in_one_line(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamPool(model, **kwargs)
