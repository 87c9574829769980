"""Many streams: a pool of workers, each holding the sessions of the streams pinned to it.

A stream (a camera, a screen, an audio channel) is pinned to one worker on its first frame, the
least loaded one, and stays there: its session and caches live on that worker, its frames run in
the order they were submitted, and streams on different workers run in parallel.

backend="local" (the default) runs the workers as threads of this process. Sessions of one model
share its packed weights, and the kernel threads are split between the workers: the kernels
release the interpreter lock, so workers overlap. backend="ray" runs each worker as a Ray actor
(the `[ray]` extra; reuserun/pool_ray.py), for more streams than one machine holds.

Backpressure: each stream holds at most `max_pending` frames not yet run. A further frame either
waits (`when_full="block"`) or replaces the stream's oldest pending frame (`"drop_oldest"`, as a
live camera wants), whose future is then cancelled and counted as dropped.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from reuserun.ir import InputError
from reuserun.runtime import options

WHEN_FULL = ("block", "drop_oldest")


class _Stream:
    def __init__(self, stream_id, worker: int):
        self.id, self.worker = stream_id, worker
        self.pending: deque = deque()  # (feed, output names, future, submitted at)
        self.session = None  # made by its worker on the first frame
        self.frames = self.dropped = self.failed = 0
        self.latencies: deque = deque(maxlen=1000)  # seconds from submit to result
        self.mac_fractions: deque = deque(maxlen=1000)
        self.lost = 0  # the local backend loses no frame
        self.running = False  # a worker is running one of its frames
        self.closing = False

    def waiting(self) -> int:
        return len(self.pending)


class StreamPool:
    """model: an ONNX path or bytes; workers: how many (default: the usable CPUs); threads: kernel
    threads per worker (default: the usable CPUs shared out); max_pending and when_full: the
    backpressure per stream; session_options: InferenceSession's keyword options, the same for
    every stream."""

    def __new__(cls, model=None, backend: str = "local", *args, **kwargs):
        if backend == "ray":  # the same calls, on Ray actors
            from reuserun.pool_ray import RayStreamPool
            return RayStreamPool(model, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, model, backend: str = "local", workers: int | None = None, threads: int | None = None,
                 max_pending: int = 4, when_full: str = "block", **session_options):
        if backend != "local":
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be one of {WHEN_FULL}, got {when_full!r}")
        cpus = options.usable_cpus()
        self.workers = options.workers(cpus if workers is None else workers)
        self.threads = options.threads(threads) if threads is not None else max(1, cpus // self.workers)
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        self.max_pending, self.when_full = max_pending, when_full
        if "threads" in session_options:
            raise ValueError("give the pool's threads= (per worker), not a session's")
        self._model = model_bytes(model)
        self._options = session_options
        from reuserun.runtime.session import InferenceSession
        InferenceSession(self._model, threads=1, **session_options)  # a bad model or option fails here
        self._streams: dict = {}
        self._lock = threading.Condition()
        self._ready = [deque() for _ in range(self.workers)]  # per worker: stream ids, one per frame
        self._busy = [0.0] * self.workers  # seconds each worker spent running frames
        self._started = time.perf_counter()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, args=(w,), daemon=True, name=f"reuserun-pool-{w}")
                         for w in range(self.workers)]
        for t in self._threads:
            t.start()

    # --- the caller's side ----------------------------------------------------------------------
    def submit(self, stream_id, frame, output_names=None) -> Future:
        """Queue a frame of a stream; the future gives its outputs (as InferenceSession.run), or
        raises what run() raised for it. frame: an array (a model with one input) or a feed dict."""
        future: Future = Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the pool is shut down")
            s = self._streams.get(stream_id)
            if s is None or s.closing:
                if s is not None:
                    raise InputError(f"stream {stream_id!r} is closing")
                s = self._streams[stream_id] = _Stream(stream_id, self._least_loaded())
            while len(s.pending) >= self.max_pending:
                if self.when_full == "drop_oldest":
                    _, _, old, _ = s.pending.popleft()
                    old.cancel()
                    s.dropped += 1
                    break
                self._lock.wait()
                if self._stopping:
                    raise RuntimeError("the pool is shut down")
            s.pending.append((frame, output_names, future, time.perf_counter()))
            self._ready[s.worker].append(stream_id)
            self._lock.notify_all()
        return future

    def run(self, stream_id, frame, output_names=None) -> list[np.ndarray]:
        """submit(...).result(): this frame's outputs, after the stream's earlier frames."""
        return self.submit(stream_id, frame, output_names).result()

    def close(self, stream_id) -> None:
        """Run the stream's pending frames, then free its session and caches."""
        with self._lock:
            s = self._streams.get(stream_id)
            if s is None:
                raise InputError(f"no stream {stream_id!r} in this pool")
            s.closing = True
            while s.pending or s.running:
                self._lock.wait()
            del self._streams[stream_id]

    def stats(self) -> dict:
        """Per stream: frames run, dropped and failed, mean mac_fraction, latency percentiles (ms,
        submit to result); per worker: its streams, frames and load (busy share of the time)."""
        with self._lock:
            return pool_stats(self._streams, self._busy, time.perf_counter() - self._started, self.threads)

    def shutdown(self) -> None:
        """Stop the workers once the frames already queued have run."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for t in self._threads:
            t.join()

    def __enter__(self) -> StreamPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # --- the workers ----------------------------------------------------------------------------
    def _least_loaded(self) -> int:
        counts = [0] * self.workers
        for s in self._streams.values():
            counts[s.worker] += 1
        return min(range(self.workers), key=lambda w: (counts[w], self._busy[w]))

    def _work(self, w: int) -> None:
        from reuserun.runtime.session import InferenceSession
        ready = self._ready[w]
        while True:
            with self._lock:
                while not ready and not self._stopping:
                    self._lock.wait()
                if not ready:
                    return
                s = self._streams.get(ready.popleft())
                if s is None or not s.pending:  # its frame was dropped
                    continue
                frame, names, future, submitted = s.pending.popleft()
                s.running = True
                self._lock.notify_all()  # a blocked submit may go on
            outs, mac, t0 = None, None, time.perf_counter()
            if future.set_running_or_notify_cancel():
                try:
                    if s.session is None:
                        s.session = InferenceSession(self._model, threads=self.threads, **self._options)
                    feed = frame if isinstance(frame, dict) else {s.session.get_inputs()[0].name: frame}
                    outs = s.session.run(names, feed)
                    mac = s.session.stats.get("mac_fraction")
                    future.set_result(outs)
                except BaseException as e:  # the session refused the frame and kept its state
                    outs = None
                    future.set_exception(e)
            t1 = time.perf_counter()
            with self._lock:
                s.running = False
                if outs is not None:
                    s.frames += 1
                    s.latencies.append(t1 - submitted)
                    if mac is not None:
                        s.mac_fractions.append(mac)
                elif not future.cancelled():
                    s.failed += 1
                self._busy[w] += t1 - t0
                if s.closing and not s.pending:
                    s.session = None
                self._lock.notify_all()


def pool_stats(streams: dict, busy: list, elapsed: float, threads: int) -> dict:
    """stats() of a pool: streams {id: its record (frames, dropped, failed, lost where the
    backend loses frames, latencies, mac_fractions, pending)}, busy seconds per worker."""
    out = {}
    for sid, s in streams.items():
        lat = np.array(s.latencies) * 1e3
        out[sid] = {"worker": s.worker, "frames": s.frames, "dropped": s.dropped, "failed": s.failed,
                    "lost": s.lost, "pending": s.waiting(),
                    "mac_fraction": float(np.mean(s.mac_fractions)) if s.mac_fractions else None,
                    "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)} if len(lat) else {}}
    workers = [{"streams": sum(s.worker == w for s in streams.values()),
                "frames": sum(s.frames for s in streams.values() if s.worker == w),
                "load": busy[w] / max(elapsed, 1e-9)} for w in range(len(busy))]
    return {"streams": out, "workers": workers, "threads_per_worker": threads}


def model_bytes(model) -> bytes:
    """The model as bytes, from bytes, a ModelProto or a path."""
    if isinstance(model, bytes):
        return model
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    path = model
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, TypeError) as e:
        raise ValueError(f"cannot read the model {path!r}: {e}") from None
