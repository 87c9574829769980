"""StreamPool on Ray, on a simulated cluster of two nodes on this machine: streams spread over
the nodes, a node removed mid-stream, every answered frame bit-identical to a dense session."""
import os
from concurrent.futures import CancelledError

import numpy as np
import pytest

import reuserun
from reuserun import zoo
from reuserun.pool import StreamPool

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from test_pool import dense_outputs, stream_frames  # noqa: E402

from reuserun.pool_ray import FrameLost  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def model():
    return zoo.mobilenet_v3_like(size=64, seed=4).SerializeToString()


@pytest.fixture()
def cluster(tmp_path, monkeypatch):
    # Ray's workers start in the driver's folder and import from it: they start elsewhere, and
    # import the reuserun this test loaded (the installed one in CI)
    monkeypatch.chdir(tmp_path)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker_node = c.add_node(num_cpus=1)
    home = os.path.dirname(os.path.dirname(os.path.abspath(reuserun.__file__)))
    ray.init(address=c.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": home}})
    c.wait_for_nodes()
    yield c, worker_node
    ray.shutdown()
    c.shutdown()


def same(a, b) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_streams_spread_over_the_nodes_and_match_dense(cluster, model):
    frames = {sid: stream_frames(sid, 5) for sid in range(4)}
    with StreamPool(model, backend="ray", workers=2) as pool:
        assert len(set(pool.worker_nodes())) == 2
        futures = {sid: [pool.submit(sid, f) for f in fs] for sid, fs in frames.items()}
        for sid, fs in frames.items():
            for fut, want in zip(futures[sid], dense_outputs(model, fs)):
                assert same(fut.result(), want)
        assert sorted(w["streams"] for w in pool.stats()["workers"]) == [2, 2]
        # frames go as changes from the last one sent; a refused frame still counts as sent
        bad = frames[0][4].copy()
        bad[0, 1, 5, 5] = np.nan
        with pytest.raises(reuserun.InputError, match="NaN"):
            pool.run(0, bad)
        again = stream_frames(11, 3)
        for f, want in zip(again, dense_outputs(model, again)):
            assert same(pool.run(0, f), want)


def test_a_node_removed_mid_stream_loses_frames_but_answers_none_wrongly(cluster, model):
    c, worker_node = cluster
    frames = stream_frames(9, 10)
    want = dense_outputs(model, frames)
    with StreamPool(model, backend="ray", workers=2) as pool:
        nodes = pool.worker_nodes()
        # a stream on the worker that lives on the node to be removed
        sid = next(i for i in range(8) if nodes[i % 2] == worker_node.node_id)
        for i in range(2):  # stream i lands on worker i, the least loaded in turn
            assert same(pool.run(i, frames[0]), want[0])
        for f, w in zip(frames[1:4], want[1:4]):
            assert same(pool.run(sid, f), w)
        c.remove_node(worker_node)
        answered = lost = 0
        for f, w in zip(frames[4:], want[4:]):
            try:
                assert same(pool.run(sid, f), w)
                answered += 1
            except FrameLost:
                lost += 1
            except CancelledError:
                pytest.fail("no frame was dropped")
        stats = pool.stats()["streams"][sid]
        assert pool.restarts == (1 if lost else 0)
        assert set(pool.worker_nodes()) == {c.head_node.node_id}
    assert answered >= 1 and stats["lost"] == lost and stats["frames"] == 4 + answered
