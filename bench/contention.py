"""Full frames on a busy machine: reuserun against onnxruntime with busy neighbour processes.

Each neighbour is a process spinning in a loop for the whole measurement, as another tenant or
a second service on the same cores would. For every neighbour count and model, four runners
take the same full frames interleaved frame by frame in a random order (medians over frames
1..): reuserun (policy dense) and onnxruntime, each with 1 and with --threads threads. The table
gives reuserun's speed over onnxruntime's at --threads threads and each runtime's gain from its
extra threads.

    python bench/contention.py --neighbours 0,1,2
    python bench/contention.py --models real:resnet18,real:mobilenet_v2   # real exports (tools/real_models.py)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import onnx

from reuserun import sources, zoo
from reuserun.bench import thread_scaling

OUT = Path(__file__).resolve().parent / "out"


def _spin(stop) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def measure(proto, shape: tuple, frames: int, threads: int) -> dict:
    r = thread_scaling(proto, list(sources.synthetic_stream(shape, "full", frames=frames)), threads)
    return {**r, "speed_vs_ort": r["ms"][f"ort_{threads}"] / r["ms"][f"reuserun_{threads}"]}


def load(name: str, size: int):
    """(model, input shape): a zoo model at size x size, or real:NAME, a real export that
    tools/real_models.py made, at its own size."""
    if not name.startswith("real:"):
        return zoo.MODELS[name](size), (1, 3, size, size)
    folder = Path.home() / ".cache" / "reuserun" / "real"
    entry = next(m for m in json.loads((folder / "manifest.json").read_text())["models"]
                 if m["file"] == name[5:] + ".onnx")
    return onnx.load(str(folder / entry["file"])), tuple(entry["shape"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet,mobilenet")
    p.add_argument("--neighbours", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    rows = []
    protos = {m: load(m, args.size) for m in args.models.split(",")}
    for k in (int(v) for v in args.neighbours.split(",")):
        stop = mp.Event()
        procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(k)]
        for pr in procs:
            pr.start()
        time.sleep(0.5 if k else 0.0)  # let the scheduler spread them
        try:
            for model, (proto, shape) in protos.items():
                r = measure(proto, shape, args.frames, args.threads)
                rows.append({"neighbours": k, "model": model, **r})
                print(f"{k} neighbour(s) {model:<10} reuserun/onnxruntime speed {r['speed_vs_ort']:.2f}x  "
                      f"1->{args.threads} threads: reuserun {r['reuserun_scaling']:.2f}x, "
                      f"onnxruntime {r['ort_scaling']:.2f}x", flush=True)
        finally:
            stop.set()
            for pr in procs:
                pr.join()
    lines = [f"Full frames with busy neighbour processes (zoo models at {args.size}x{args.size}, real exports at their "
             f"own size; {args.threads} threads, "
             f"{args.frames} frames, medians, interleaved).", "",
             f"| neighbours | model | speed vs onnxruntime | reuserun 1->{args.threads} threads | "
             f"onnxruntime 1->{args.threads} threads |", "|---|---|---|---|---|"]
    lines += [f"| {r['neighbours']} | {r['model']} | {r['speed_vs_ort']:.2f}x | {r['reuserun_scaling']:.2f}x | "
              f"{r['ort_scaling']:.2f}x |" for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"threads": args.threads, "size": args.size, "rows": rows}
    (out / "contention.json").write_text(json.dumps(record, indent=1))
    (out / "contention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
