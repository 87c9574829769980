"""Per-op kernel benchmarks: reuserun's dense conv kernels against onnxruntime on one-op models.

Each case builds a one-op ONNX model, runs onnxruntime and reuserun (policy dense) on the same
input interleaved, with the same thread count, and reports medians. `kernel` times reuserun's
kernel step alone (NHWC in, NHWC out); `session` times a whole reuserun run (NCHW frame in, NCHW
outputs copied out), the fair match for onnxruntime's run.

    python bench/kernels.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import reuserun
from reuserun.bench import ort_session
from reuserun.runtime.steps import KernelStep

# name, (cin, cout, k, stride, groups, size[, "ConvTranspose"])
CASES = {
    "conv3x3 64->64 @80": (64, 64, 3, 1, 1, 80),
    "conv3x3 128->128 @40": (128, 128, 3, 1, 1, 40),
    "conv3x3 256->256 @20": (256, 256, 3, 1, 1, 20),
    "conv1x1 64->128 @80": (64, 128, 1, 1, 1, 80),
    "conv1x1 256->256 @40": (256, 256, 1, 1, 1, 40),
    "conv3x3 s2 32->64 @160": (32, 64, 3, 2, 1, 160),
    "stem conv3x3 s2 3->32 @320": (3, 32, 3, 2, 1, 320),
    "depthwise3x3 128 @80": (128, 128, 3, 1, 128, 80),
    "depthwise5x5 96 @40": (96, 96, 5, 1, 96, 40),
    "depthwise5x5 s2 240 @40": (240, 240, 5, 2, 240, 40),
    # MobileNetV3's early, narrow layers at 320 px, where most of its time goes
    "conv1x1 16->64 @160": (16, 64, 1, 1, 1, 160),
    "conv1x1 24->72 @80": (24, 72, 1, 1, 1, 80),
    "depthwise3x3 16 @160": (16, 16, 3, 1, 16, 160),
    "depthwise3x3 s2 64 @160": (64, 64, 3, 2, 64, 160),
    "depthwise3x3 72 @80": (72, 72, 3, 1, 72, 80),
    # one-output-channel heads (segmentation masks, text and centre heat maps)
    "head conv1x1 8->1 @320": (8, 1, 1, 1, 1, 320),
    "head conv3x3 8->1 @320": (8, 1, 3, 1, 1, 320),
    "head conv3x3 32->1 @160": (32, 1, 3, 1, 1, 160),
    # 2x2 stride-2 upsamplers to 4 and 1 channels (U-Net / DBNet decoder heads)
    "upsample convT2x2 s2 4->4 @160": (4, 4, 2, 2, 1, 80, "ConvTranspose"),
    "upsample convT2x2 s2 4->1 @320": (4, 1, 2, 2, 1, 160, "ConvTranspose"),
}


def one_conv(cin, cout, k, s, g, size, op="Conv", seed=0) -> onnx.ModelProto:
    """A Conv with same padding, or a ConvTranspose without padding (size: its input's)."""
    rng = np.random.default_rng(seed)
    shape = (cout, cin // g, k, k) if op == "Conv" else (cin, cout // g, k, k)
    w = (rng.standard_normal(shape) / np.sqrt(cin // g * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    p = k // 2 if op == "Conv" else 0
    out = (size + 2 * p - k) // s + 1 if op == "Conv" else (size - 1) * s + k
    node = helper.make_node(op, ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, group=g)
    graph = helper.make_graph([node], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, cin, size, size))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, cout, out, out))],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bench_case(spec, threads: int, reps: int) -> dict:
    cin, cout, k, s, g, size = spec[:6]
    model = one_conv(*spec)
    x = np.random.default_rng(1).standard_normal((1, cin, size, size)).astype(np.float32)
    ort = ort_session(model.SerializeToString(), threads)
    rr = reuserun.InferenceSession(model, policy="dense", threads=threads)
    ref = ort.run(None, {"x": x})[0]
    err = float(np.abs(rr.run(None, {"x": x})[0] - ref).max())
    step = next(st for st in rr.program if isinstance(st, KernelStep))
    t = {"ort": [], "session": [], "kernel": []}
    for _ in range(reps):
        for key, call in (("ort", lambda: ort.run(None, {"x": x})), ("session", lambda: rr.run(None, {"x": x})),
                          ("kernel", lambda: step.run(True, None, threads))):
            t0 = time.perf_counter()
            call()
            t[key].append(time.perf_counter() - t0)
    med = {k: float(np.median(v[2:])) for k, v in t.items()}
    macs = step.macs_per_pixel * step.npix
    return {"ort_ms": med["ort"] * 1e3, "session_ms": med["session"] * 1e3, "kernel_ms": med["kernel"] * 1e3,
            "kernel_vs_ort": med["ort"] / med["kernel"], "session_vs_ort": med["ort"] / med["session"],
            "kernel_gmacs": macs / med["kernel"] / 1e9, "max_abs_err": err}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    print(f"{'case':<28} {'ort ms':>8} {'kernel':>8} {'session':>8} {'GMAC/s':>7}  (speed vs onnxruntime)")
    for name, spec in CASES.items():
        r = bench_case(spec, args.threads, args.reps)
        results[name] = r
        print(f"{name:<28} {r['ort_ms']:>8.3f} {r['kernel_vs_ort']:>7.2f}x {r['session_vs_ort']:>7.2f}x "
              f"{r['kernel_gmacs']:>7.1f}  err {r['max_abs_err']:.1e}", flush=True)
    record = {"threads": args.threads, "results": results}
    (out / f"kernels_t{args.threads}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
