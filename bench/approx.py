"""Approximate mode on camera-like video: speedup against error for several thresholds.

The clip is synthetic but camera-like (tools/camera_clip.py: textured static background, sensor
noise, brightness flicker, moving objects, H.264 through PyAV), where exact reuse buys little.
For each model and threshold, onnxruntime and reuserun run the same frames interleaved (random
order, same threads); error is reuserun against onnxruntime per frame: relative L2 (mean and
worst) and, for classifiers, argmax agreement. `+global` adds a threshold on global pooling
outputs (squeeze-excite vectors), so a pooled vector that barely moved does not make every
position downstream recompute.

    python bench/approx.py --size 160 --frames 80
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import reuserun
from reuserun import zoo
from reuserun.bench import interleaved, ort_session
from reuserun.streams import frames_from_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import camera_clip  # noqa: E402

THRESHOLDS = (0.0, 0.01, 0.02, 0.05, 0.1)


def global_layers(sess) -> list[str]:
    return [n.name for n in sess._graph.nodes if n.op in ("global_avgpool", "global_maxpool")]


def run(model, frames, configs, threads):
    ort = ort_session(model.SerializeToString(), threads)
    name = ort.get_inputs()[0].name
    sessions = {}
    for label, (thr, layers) in configs.items():
        sessions[label] = reuserun.InferenceSession(model, threshold=thr, layer_thresholds=layers, threads=threads)
    stats = {k: {"rel_l2": [], "mac": [], "argmax": []} for k in sessions}
    runners = {None: lambda f: ort.run(None, {name: f})}
    runners.update({k: (lambda f, s=s: s.run(None, {name: f})) for k, s in sessions.items()})

    def record(outs):
        for k, s in sessions.items():
            ref, out = outs[None][0], outs[k][0]
            stats[k]["rel_l2"].append(float(np.linalg.norm(out - ref) / np.linalg.norm(ref)))
            stats[k]["mac"].append(s.stats["mac_fraction"])
            if ref.ndim == 2 and ref.shape[1] > 1:
                stats[k]["argmax"].append(int(out.argmax() == ref.argmax()))

    times = interleaved(frames, runners, record)
    ort_med = float(np.median(times[None][1:]))
    rows = []
    for k in sessions:
        st = stats[k]
        rows.append({"config": k, "threshold": configs[k][0], "speedup": ort_med / float(np.median(times[k][1:])),
                     "mac_fraction": float(np.mean(st["mac"][1:])), "mean_rel_l2": float(np.mean(st["rel_l2"])),
                     "max_rel_l2": float(np.max(st["rel_l2"])),
                     "argmax_agreement": float(np.mean(st["argmax"])) if st["argmax"] else None})
    return rows


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, rows in results.items():
        for variant in ("", "+global"):
            pts = [(r["mean_rel_l2"], r["speedup"]) for r in rows if r["config"].endswith(variant) == bool(variant)
                   and (variant or not r["config"].endswith("+global"))]
            if pts:
                x, y = zip(*pts)
                ax.plot(np.maximum(x, 1e-7), y, "o-", label=model + variant)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("mean relative L2 error against onnxruntime")
    ax.set_ylabel("speedup over onnxruntime")
    ax.set_title("camera-like video: speedup against error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet,mobilenet")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = camera_clip.write_clip(str(Path(tmp) / "clip.mp4"), args.frames, args.size, args.size)
        frames = frames_from_spec(f"video:{clip}", (1, 3, args.size, args.size), args.frames)
    results = {}
    for model_name in args.models.split(","):
        model = zoo.MODELS[model_name](args.size)
        probe = reuserun.InferenceSession(model)
        glob = global_layers(probe)
        configs = {f"t={t}": (t, None) for t in THRESHOLDS}
        if glob:
            configs.update({f"t={t}+global": (t, {g: 0.01 for g in glob}) for t in THRESHOLDS[1:]})
        results[model_name] = run(model, frames, configs, args.threads)
        for r in results[model_name]:
            print(f"{model_name:<10} {r['config']:<14} speedup {r['speedup']:5.2f}x  mac {r['mac_fraction']:.3f}  "
                  f"rel L2 mean {r['mean_rel_l2']:.4f} max {r['max_rel_l2']:.4f}  argmax {r['argmax_agreement']}",
                  flush=True)
    meta = {"size": args.size, "frames": args.frames, "threads": args.threads,
            "clip": "tools/camera_clip.py: noise 2/255, flicker 1%, 2 moving objects, H.264 crf 23"}
    (out / f"approx_{args.size}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, out / f"approx_{args.size}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
