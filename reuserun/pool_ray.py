"""StreamPool's Ray backend (the `[ray]` extra): each worker is a Ray actor that holds the sessions
of its streams, spread over the cluster's nodes.

- A stream is pinned to the actor with the fewest streams on its first frame and stays there;
  Ray runs one caller's calls to an actor in order, so a stream's frames run in order.
- Each actor holds one copy of the model's packed weights, shared by its streams.
- Backpressure as in the local pool: at most `max_pending` frames of a stream in flight; a further
  frame waits for the oldest (`when_full="block"`) or cancels it (`"drop_oldest"`).
- A worker that dies (its process or its node) is replaced by a new, empty one on an alive node.
  The frames it held in flight fail with FrameLost and are counted as lost; the stream's next
  frame makes a new session there, whose first frame is computed densely. No frame is answered from a cache that
  did not see the frames before it.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, wait

import numpy as np

from reuserun.ir import InputError
from reuserun.pool import WHEN_FULL, model_bytes, pool_stats
from reuserun.runtime import options

# a frame that changed on at most 1/DELTA_PART of its elements is sent as the change alone
DELTA_PART = 4


class FrameLost(RuntimeError):
    """A frame was in flight on a worker that died; it has no outputs."""


class _Worker:
    """The actor's body: sessions by stream id, made on a stream's first frame."""

    def __init__(self, model: bytes, threads: int, session_options: dict):
        self.model, self.threads, self.options = model, threads, session_options
        self.sessions: dict = {}
        self.frames: dict = {}  # stream id -> (its number, the last frame it was sent)

    def run(self, stream_id, feed, names, delta=None):
        """delta: (the number of the frame this one is a change from, or None when feed is the
        frame whole; this frame's number); with a base, feed is (positions, values) of the
        change. None: feed is whole and unnumbered (a feed dict)."""
        from reuserun.runtime.session import InferenceSession
        t0 = time.perf_counter()
        feed = self._frame(stream_id, feed, delta)
        s = self.sessions.get(stream_id)
        if s is None:
            s = self.sessions[stream_id] = InferenceSession(self.model, threads=self.threads, **self.options)
        if not isinstance(feed, dict):
            feed = {s.get_inputs()[0].name: feed}
        outs = s.run(names, feed)
        return outs, s.stats.get("mac_fraction"), time.perf_counter() - t0

    def _frame(self, stream_id, feed, delta):
        if delta is None:  # a feed the pool does not send as changes
            self.frames.pop(stream_id, None)
            return feed
        base, number = delta
        if base is None:  # whole, numbered: the next may be a change from it
            self.frames[stream_id] = (number, feed)
            return feed
        kept = self.frames.get(stream_id)
        if kept is None or kept[0] != base:  # the pool sends a whole frame after any gap
            raise RuntimeError(f"stream {stream_id!r}: a change from frame {base} without that frame")
        frame = kept[1].copy()
        positions, values = feed
        frame.reshape(-1)[positions] = values
        self.frames[stream_id] = (number, frame)
        return frame

    def close(self, stream_id) -> None:
        self.sessions.pop(stream_id, None)
        self.frames.pop(stream_id, None)

    def ping(self) -> bool:
        return True

    def node(self) -> str:
        import ray
        return ray.get_runtime_context().get_node_id()


class _Stream:
    def __init__(self, worker: int):
        self.worker = worker
        self.sent = None  # (number, copy) of the last whole array sent, to send the next as a change
        self.number = 0
        self.in_flight: deque = deque()  # (object ref, our future)
        self.frames = self.dropped = self.lost = self.failed = 0
        self.latencies: deque = deque(maxlen=1000)
        self.mac_fractions: deque = deque(maxlen=1000)

    def waiting(self) -> int:
        return len(self.in_flight)


class RayStreamPool:
    """As reuserun.pool.StreamPool, with workers as Ray actors. Uses the Ray cluster this process
    is connected to (ray.init() first to choose one; else a local one is started)."""

    def __init__(self, model, workers: int | None = None, threads: int = 1, max_pending: int = 4,
                 when_full: str = "block", **session_options):
        import ray
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be one of {WHEN_FULL}, got {when_full!r}")
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        if "threads" in session_options:
            raise ValueError("give the pool's threads= (per worker), not a session's")
        self.threads = options.threads(threads) if threads is not None else 1
        self.max_pending, self.when_full = max_pending, when_full
        model = model_bytes(model)
        from reuserun.runtime.session import InferenceSession
        InferenceSession(model, threads=1, **session_options)  # a bad model or option fails here
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        self._ray = ray
        # default: one worker per node of the cluster
        self.workers = options.workers(workers if workers is not None
                                       else sum(n["Alive"] for n in ray.nodes()) or 1)
        self._actor_class = ray.remote(num_cpus=0, max_restarts=0)(_Worker)
        self._model_ref = ray.put(model)  # held, so a replacement worker finds it
        self._session_options = session_options
        nodes = self._alive_nodes()
        # workers dealt over the nodes in turn
        self._actors = [self._start_worker(nodes[w % len(nodes)]) for w in range(self.workers)]
        self._nodes = {id(a): nodes[w % len(nodes)] for w, a in enumerate(self._actors)}
        self.restarts = 0  # workers replaced after they died
        ray.get([a.ping.remote() for a in self._actors])
        self._streams: dict = {}
        self._busy = [0.0] * self.workers
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    def submit(self, stream_id, frame, output_names=None) -> Future:
        """Queue a frame of a stream; the future gives its outputs, or raises what its session
        raised, FrameLost (its worker died) or CancelledError (dropped)."""
        s, actor, ref, future, submitted = self._send(stream_id, frame, output_names)
        ref.future().add_done_callback(lambda done: self._finish(s, actor, ref, future, done, submitted))
        return future

    def run(self, stream_id, frame, output_names=None) -> list[np.ndarray]:
        # waits on the future: a blocking ray.get polls, and takes a core from the workers
        return self.submit(stream_id, frame, output_names).result()

    def _send(self, stream_id, frame, output_names):
        future: Future = Future()
        with self._lock:
            s = self._streams.get(stream_id)
            if s is None:
                counts = [sum(x.worker == w for x in self._streams.values()) for w in range(self.workers)]
                s = self._streams[stream_id] = _Stream(min(range(self.workers), key=counts.__getitem__))
            while len(s.in_flight) >= self.max_pending:
                oldest, oldest_future = s.in_flight[0]
                if self.when_full == "drop_oldest":
                    self._ray.cancel(oldest)
                    break
                self._lock.release()
                try:  # _finish takes it out of in_flight before its future is done
                    wait([oldest_future])
                finally:
                    self._lock.acquire()
            actor = self._actors[s.worker]
            payload, delta = self._encode(s, frame)
            ref = actor.run.remote(stream_id, payload, output_names, delta)
            s.in_flight.append((ref, future))
        return s, actor, ref, future, time.perf_counter()

    def close(self, stream_id) -> None:
        with self._lock:
            s = self._streams.pop(stream_id, None)
        if s is None:
            raise InputError(f"no stream {stream_id!r} in this pool")
        for _, fut in list(s.in_flight):
            try:
                fut.exception()
            except BaseException:  # cancelled
                pass
        self._ray.get(self._actors[s.worker].close.remote(stream_id))

    def stats(self) -> dict:
        """As StreamPool.stats(), with the frames each stream lost with a dead worker."""
        with self._lock:
            return pool_stats(self._streams, self._busy, time.perf_counter() - self._started, self.threads)

    def _encode(self, s: _Stream, frame):
        """(what to send, delta): a frame that differs from the stream's last one on few
        elements goes as the change alone (positions and values), the frame whole otherwise;
        the worker rebuilds it bit for bit. Not with drop_oldest: a dropped frame would leave the
        worker without the frame a change is from."""
        if not isinstance(frame, np.ndarray) or self.when_full == "drop_oldest":
            s.sent = None
            return frame, None
        s.number += 1
        frame = np.ascontiguousarray(frame)
        last, s.sent = s.sent, (s.number, frame.copy())
        if last is None or last[1].shape != frame.shape or last[1].dtype != frame.dtype:
            return frame, (None, s.number)
        flat, old = frame.reshape(-1), last[1].reshape(-1)
        bits = f"u{flat.itemsize}"  # bits, not values: NaN != NaN, and -0.0 == 0.0
        positions = np.flatnonzero(flat.view(bits) != old.view(bits))
        if len(positions) > flat.size // DELTA_PART:
            return frame, (None, s.number)
        return (positions.astype(np.int32), flat[positions]), (last[0], s.number)

    def _alive_nodes(self) -> list[str]:
        return [n["NodeID"] for n in self._ray.nodes() if n["Alive"]]

    def _start_worker(self, node: str):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        return self._actor_class.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            self._model_ref, self.threads, self._session_options)

    def _replace_worker(self, w: int, dead) -> None:
        """A new, empty worker in place of a dead one, on the alive node with the fewest workers
        (once per death, whichever lost frame reports it first)."""
        if self._actors[w] is not dead:
            return
        placed = {}
        for i, a in enumerate(self._actors):
            if i != w:
                placed[self._nodes.get(id(a))] = placed.get(self._nodes.get(id(a)), 0) + 1
        alive = self._alive_nodes()
        node = min(alive, key=lambda n: placed.get(n, 0))
        self._actors[w] = self._start_worker(node)
        for st in self._streams.values():  # the new worker has no frame to apply a change to
            if st.worker == w:
                st.sent = None
        self._nodes[id(self._actors[w])] = node
        self.restarts += 1

    def worker_nodes(self) -> list[str]:
        """The Ray node each worker runs on."""
        return self._ray.get([a.node.remote() for a in self._actors])

    def shutdown(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []

    def __enter__(self) -> RayStreamPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _finish(self, s: _Stream, actor, ref, future: Future, done, submitted: float) -> None:
        """Our future takes the actor's answer: outputs, the session's refusal, a cancellation or
        the loss of the frame with its worker."""
        exc = done.exception()
        ray = self._ray
        with self._lock:
            if exc is None:
                outs, mac, seconds = done.result()
                s.frames += 1
                s.latencies.append(time.perf_counter() - submitted)
                if mac is not None:
                    s.mac_fractions.append(mac)
                self._busy[s.worker] += seconds
            elif isinstance(exc, ray.exceptions.TaskCancelledError):
                s.dropped += 1
            elif isinstance(exc, ray.exceptions.RayActorError):
                s.lost += 1
                self._replace_worker(s.worker, actor)
            else:
                s.failed += 1
            self._forget_done_after(s, ref)
        if exc is None:
            future.set_result(outs)
        elif isinstance(exc, ray.exceptions.TaskCancelledError):
            future.cancel()
            future.set_running_or_notify_cancel()
        elif isinstance(exc, ray.exceptions.RayActorError):
            future.set_exception(FrameLost(f"the frame was in flight on a worker that died ({type(exc).__name__}); "
                                           f"the stream's next frame runs densely on its restarted worker"))
        elif isinstance(exc, ray.exceptions.RayTaskError):
            future.set_exception(exc.as_instanceof_cause())
        else:
            future.set_exception(exc)

    @staticmethod
    def _forget_done_after(s: _Stream, ref) -> None:
        s.in_flight = deque(item for item in s.in_flight if item[0] != ref)
