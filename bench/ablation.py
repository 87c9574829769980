"""What the program for dense frames gains from adding residuals in the conv epilogue, on real
exports: the same session's graph compiled with and without it (runtime/compiler.py,
`residuals=`), both programs run on the same frame, interleaved in a fresh random order each
round, medians. Both must give the same bits (checked every round).

    PYTHONPATH=. python bench/ablation.py [--models resnet50,regnet_x_400mf] [--rounds 40]

Writes bench/out/ablation.json and bench/out/ablation.md.
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
from reuserun.plan.policies import make_policy  # noqa: E402
from reuserun.runtime import driver  # noqa: E402
from reuserun.runtime.compiler import Compiler  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
REAL = os.path.expanduser("~/.cache/reuserun/real")
DEFAULT = "resnet18,resnet50,regnet_x_400mf,mobilenet_v2,efficientnet_b0,yolov8n"


def programs(path: str, threads: int, seed: int = 0):
    """(input shape, {variant: (steps, storage)}) for one model, the frame loaded into each."""
    sess = reuserun.InferenceSession(path, threads=threads)
    arg = sess.get_inputs()[0]
    frame = np.random.default_rng(seed).random(arg.shape, dtype=np.float32)
    sess.run(None, {arg.name: frame})  # binds the shapes
    built, packed = {}, {}  # one copy of the packed weights, as the session's programs share theirs
    for name, residuals in (("fused", True), ("separate", False)):
        steps, storage = Compiler(sess.graph, packed, reuse=True, residuals=residuals).build()
        storage[arg.name].load(frame, threads)
        built[name] = (steps, storage, sum(s.node is not None and s.node.op == "binary" for s in steps))
    return sess.graph.outputs, built


def measure(path: str, threads: int, rounds: int) -> dict:
    outputs, built = programs(path, threads)
    policy = make_policy("dense", None)
    rng = np.random.default_rng(1)
    times = {k: [] for k in built}
    for _ in range(rounds):
        bits = {}
        for k in rng.permutation(list(built)):
            steps, storage, _ = built[k]
            t0 = time.perf_counter()
            driver.run_full(steps, policy, threads)
            times[k].append(time.perf_counter() - t0)
            bits[k] = b"".join(storage[o].logical().tobytes() for o in outputs)
        if len(set(bits.values())) != 1:
            raise AssertionError(f"{path}: the two programs disagree")
    med = {k: 1e3 * float(np.median(v[3:])) for k, v in times.items()}
    return {"fused_ms": med["fused"], "separate_ms": med["separate"], "gain": med["separate"] / med["fused"],
            "adds_left_fused": built["fused"][2], "adds_separate": built["separate"][2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    results = {}
    for m in args.models.split(","):
        results[m] = r = measure(os.path.join(REAL, m + ".onnx"), args.threads, args.rounds)
        print(f"{m:24s} fused {r['fused_ms']:7.2f} ms  separate {r['separate_ms']:7.2f} ms  gain {r['gain']:.3f}x  "
              f"binary steps {r['adds_separate']} -> {r['adds_left_fused']}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ablation.json"), "w") as f:
        json.dump({"threads": args.threads, "rounds": args.rounds, "results": results}, f, indent=1)
    lines = ["# Residual adds in the conv epilogue (the program for dense frames)", "",
             f"{args.threads} threads, {args.rounds} rounds, medians; same bits from both programs.", "",
             "| model | fused ms | separate ms | gain | binary steps |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {r['fused_ms']:.2f} | {r['separate_ms']:.2f} | {r['gain']:.3f}x | "
              f"{r['adds_separate']} -> {r['adds_left_fused']} |" for m, r in results.items()]
    with open(os.path.join(args.out, "ablation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
