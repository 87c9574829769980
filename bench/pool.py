"""Many streams through reuserun.pool.StreamPool: throughput of N streams against one stream on one
thread, and the Ray backend's per-frame overhead over the local one.

Each stream is the synthetic "object" scene with its own seed (or the same real clip offset per
stream with --source video:PATH), at the model's own input size.

  PYTHONPATH=. python bench/pool.py [--model FILE] [--streams 8] [--frames 20] [--ray]

Writes bench/out/pool.json and bench/out/pool.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reuserun  # noqa: E402
from reuserun import streams  # noqa: E402
from reuserun.pool import StreamPool  # noqa: E402
from reuserun.runtime import options  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
REAL = os.path.expanduser("~/.cache/reuserun/real")


def model_and_shape(path: str | None):
    if path is None:
        path = os.path.join(REAL, "mobilenet_v2.onnx")
    shape = None
    manifest = os.path.join(os.path.dirname(path), "manifest.json")
    if os.path.exists(manifest):
        for m in json.load(open(manifest))["models"]:
            if m["file"] == os.path.basename(path):
                shape = tuple(m["shape"])
    if shape is None:
        shape = tuple(reuserun.InferenceSession(path).get_inputs()[0].shape)
    with open(path, "rb") as f:
        return f.read(), shape, os.path.basename(path)


def one_stream(model: bytes, frames: list) -> float:
    """Frames per second of one stream on one thread, after its first frame (which makes the
    session and runs densely)."""
    s = reuserun.InferenceSession(model, threads=1, input_shape=frames[0].shape)
    name = s.get_inputs()[0].name
    s.run(None, {name: frames[0]})
    t0 = time.perf_counter()
    for f in frames[1:]:
        s.run(None, {name: f})
    return (len(frames) - 1) / (time.perf_counter() - t0)


def through_pool(pool, per_stream: dict) -> float:
    """Frames per second of every stream through the pool, frames submitted interleaved, after
    each stream's first frame (which makes its session and runs densely)."""
    n = len(next(iter(per_stream.values())))
    for f in [pool.submit(sid, fs[0]) for sid, fs in per_stream.items()]:
        f.result()
    t0 = time.perf_counter()
    futures = [pool.submit(sid, fs[i]) for i in range(1, n) for sid, fs in per_stream.items()]
    for f in futures:
        f.result()
    return len(futures) / (time.perf_counter() - t0)


def per_frame_ms(pool, frames: list) -> float:
    """Median wall time of one stream's frames, run one after another through the pool."""
    times = []
    for f in frames:
        t0 = time.perf_counter()
        pool.run("one", f)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[2:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="an ONNX file (default: the real MobileNetV2 export)")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--frames", type=int, default=20, help="frames per stream")
    ap.add_argument("--source", default="synthetic:object")
    ap.add_argument("--ray", action="store_true", help="also the Ray backend on a simulated 2-node cluster")
    args = ap.parse_args()
    model, shape, name = model_and_shape(args.model)
    cpus = options.usable_cpus()
    per_stream = {sid: streams.frames_from_spec(args.source, shape, args.frames, seed=sid)
                  for sid in range(args.streams)}
    per_stream = {sid: [np.ascontiguousarray(f, np.float32) for f in fs] for sid, fs in per_stream.items()}
    base = one_stream(model, per_stream[0])
    with StreamPool(model, workers=cpus, threads=1) as pool:
        pooled = through_pool(pool, per_stream)
        stats = pool.stats()
    result = {"model": name, "shape": list(shape), "streams": args.streams, "frames_per_stream": args.frames,
              "source": args.source, "cpus": cpus, "one_stream_one_thread_fps": base, "pool_fps": pooled,
              "ratio": pooled / base,
              "latency_p50_ms": float(np.median([s["latency_ms"]["p50"] for s in stats["streams"].values()])),
              "worker_load": [w["load"] for w in stats["workers"]]}
    if args.ray:
        result.update(ray_overhead(model, per_stream[0]))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "pool.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [f"# Many streams: {name} at {shape[2]}x{shape[3]}, {args.source}", "",
             f"{args.streams} streams x {args.frames} frames through StreamPool (local backend, {cpus} "
             f"workers x 1 thread) against one stream on one thread, same process.", "",
             "| | frames/s |", "|---|---|",
             f"| one stream, one thread | {base:.1f} |",
             f"| {args.streams} streams, pool | {pooled:.1f} ({pooled / base:.2f}x) |"]
    if args.ray:
        lines += ["", f"Ray backend, simulated 2-node cluster: one stream's frames one after another, median "
                  f"{result['ray_ms']:.2f} ms against {result['local_ms']:.2f} ms locally "
                  f"(overhead {result['ray_ms'] - result['local_ms']:.2f} ms a frame)."]
    with open(os.path.join(OUT, "pool.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def ray_overhead(model: bytes, frames: list) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        local, remote = [], []
        with StreamPool(model, workers=1, threads=1) as pool, \
                StreamPool(model, backend="ray", workers=1, threads=1) as rpool:
            for _ in range(3):  # alternated, so both see the same machine
                local.append(per_frame_ms(pool, frames))
                remote.append(per_frame_ms(rpool, frames))
                pool.close("one")
                rpool.close("one")
        return {"local_ms": float(np.median(local)), "ray_ms": float(np.median(remote))}
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
