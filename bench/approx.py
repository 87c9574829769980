"""Approximate mode on camera-like video: speedup against error for several thresholds.

The clip is synthetic but camera-like (tools/camera_clip.py: textured static background, sensor
noise, brightness flicker, moving objects, H.264 through PyAV), where exact reuse buys little.
Each configuration runs in its own pass with onnxruntime (same frames, same threads, interleaved
frame by frame in a random order, medians); error is reuserun against onnxruntime per frame:
relative L2 per output (mean over frames of the worst output, and the worst frame), argmax
agreement for classifiers and, for heat-map outputs (values in [0, 1]), the IoU of the maps
binarised at 0.5.

Configurations:
  t=T         one input threshold T (frames in [0, 1] after the clip's normalisation);
  t=T+global  plus a threshold on global pooling outputs (squeeze-excite vectors), so a pooled
              vector that barely moved does not make every position downstream recompute;
  tuned<=E    `reuserun tune` with budget E (worst relative L2), calibrated on a different clip
              (another seed: other noise, flicker and object paths), then run on this one.

Models: zoo names (random weights) and `detector`, the trained CenterNet-style detector in
bench/assets/detector.onnx (tools/train_detector.py); any ONNX path works too.

    python bench/approx.py --models detector --size 320 --frames 80
    python bench/approx.py --models resnet,mobilenet --size 160 --frames 80
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

import reuserun
from reuserun import zoo
from reuserun.bench import markdown_table, ort_session, paired_passes, save_report
from reuserun.streams import frames_from_spec
from reuserun.tune import frame_error, tune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import camera_clip  # noqa: E402

THRESHOLDS = (0.0, 0.01, 0.02, 0.05, 0.1)
BUDGETS = (0.005, 0.01, 0.02, 0.05)
DETECTOR = Path(__file__).resolve().parent / "assets" / "detector.onnx"


def load(name: str, size: int) -> onnx.ModelProto:
    if name in zoo.MODELS:
        return zoo.MODELS[name](size)
    return onnx.load(str(DETECTOR if name == "detector" else name))


def global_layers(sess) -> list[str]:
    return [n.name for n in sess.graph.nodes if n.op in ("global_avgpool", "global_maxpool")]


def heat_iou(out: np.ndarray, ref: np.ndarray) -> float | None:
    """IoU of the two maps binarised at 0.5, for outputs that look like heat maps."""
    if ref.ndim != 4 or ref.min() < 0 or ref.max() > 1:
        return None
    a, b = out > 0.5, ref > 0.5
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def run(model, frames, configs, threads):
    ort = ort_session(model.SerializeToString(), threads)
    name = ort.get_inputs()[0].name
    rows = []
    for label, (thr, layers) in configs.items():
        sess = reuserun.InferenceSession(model, threshold=thr, layer_thresholds=layers, threads=threads)
        st = {"rel_l2": [], "mac": [], "argmax": [], "iou": []}

        def record(key, outs, sess=sess, st=st):
            refs, mine = outs[None], outs[key]
            err, agreed = frame_error(mine, refs)
            st["rel_l2"].append(err)
            st["argmax"] += agreed
            st["mac"].append(sess.stats["mac_fraction"])
            iou = heat_iou(mine[0], refs[0])
            if iou is not None:
                st["iou"].append(iou)

        times = paired_passes(frames, lambda f: ort.run(None, {name: f}),
                              {label: lambda f, s=sess: s.run(None, {name: f})}, record)
        mine, base = times[label]
        rows.append({"config": label, "threshold": thr,
                     "speedup": float(np.median(base[1:])) / float(np.median(mine[1:])),
                     "mac_fraction": float(np.mean(st["mac"][1:])), "mean_rel_l2": float(np.mean(st["rel_l2"])),
                     "max_rel_l2": float(np.max(st["rel_l2"])),
                     "argmax_agreement": float(np.mean(st["argmax"])) if st["argmax"] else None,
                     "heat_iou": float(np.mean(st["iou"])) if st["iou"] else None})
        r = rows[-1]
        print(f"  {label:<16} speedup {r['speedup']:5.2f}x  mac {r['mac_fraction']:.3f}  rel L2 mean "
              f"{r['mean_rel_l2']:.4f} max {r['max_rel_l2']:.4f}  argmax {r['argmax_agreement']}  "
              f"heat IoU {r['heat_iou']}", flush=True)
    return rows


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for model, rows in results.items():
        for kind in ("t=", "+global", "tuned"):
            pts = [(r["mean_rel_l2"], r["speedup"]) for r in rows if kind in r["config"]
                   and (kind != "t=" or "+global" not in r["config"])]
            if pts:
                x, y = zip(*sorted(pts))
                label = {"t=": "input threshold", "+global": "input + global", "tuned": "tuned per layer"}[kind]
                ax.plot(np.maximum(x, 1e-7), y, "o-", label=f"{model}: {label}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axvline(0.01, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean relative L2 error against onnxruntime")
    ax.set_ylabel("speedup over onnxruntime (log)")
    ax.set_title("camera-like video: speedup against error")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results, meta) -> str:
    def opt(v, f):
        return "-" if v is None else f.format(v)
    head = (f"Approximate mode on a camera-like clip ({meta['size']}x{meta['size']}, {meta['frames']} frames; "
            f"{meta['clip']}), {meta['threads']} threads, speedup over onnxruntime (median ms/frame ratio, "
            "interleaved). Error against onnxruntime per frame: relative L2 of the worst output (mean over frames, "
            "worst frame), IoU of heat maps binarised at 0.5.")
    columns = [("model", lambda r: r["model"]), ("config", lambda r: r["config"]),
               ("speedup", lambda r: f"{r['speedup']:.2f}x"), ("mac_fraction", lambda r: f"{r['mac_fraction']:.3f}"),
               ("rel L2 mean", lambda r: f"{r['mean_rel_l2']:.4f}"),
               ("rel L2 worst", lambda r: f"{r['max_rel_l2']:.4f}"),
               ("heat IoU", lambda r: opt(r.get("heat_iou"), "{:.3f}")),
               ("argmax", lambda r: opt(r.get("argmax_agreement"), "{:.2f}"))]
    rows = [dict(r, model=m) for m, rs in results.items() for r in rs]
    return head + "\n\n" + markdown_table(columns, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="detector")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--calib-frames", type=int, default=40, help="frames of the tuning clip")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="tune budgets; empty: no tuning")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = (1, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        clip = camera_clip.write_clip(str(Path(tmp) / "clip.mp4"), args.frames, args.size, args.size)
        calib = camera_clip.write_clip(str(Path(tmp) / "calib.mp4"), args.calib_frames, args.size, args.size, seed=1)
        frames = frames_from_spec(f"video:{clip}", shape, args.frames)
        calib_frames = frames_from_spec(f"video:{calib}", shape, args.calib_frames)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    results, tuned = {}, {}
    for model_name in args.models.split(","):
        model = load(model_name, args.size)
        glob = global_layers(reuserun.InferenceSession(model))
        configs = {f"t={t}": (t, None) for t in THRESHOLDS}
        if glob:
            configs.update({f"t={t}+global": (t, {g: 0.01 for g in glob}) for t in THRESHOLDS[1:]})
        for b in budgets:
            res = tune(model, calib_frames, b, threads=args.threads)
            held = "" if res.holdout_rel_l2 is None else f" (held out {res.holdout_rel_l2:.4f})"
            print(f"{model_name}: tuned <= {b}: input {res.threshold:.4g}, "
                  f"{sum(1 for v in res.layer_thresholds.values() if v)} layer thresholds, "
                  f"calibration worst rel L2 {res.max_rel_l2:.4f}{held}, mac {res.mac_fraction:.3f}", flush=True)
            configs[f"tuned<={b}"] = (res.threshold, res.layer_thresholds)
            tuned[f"{model_name} tuned<={b}"] = json.loads(res.to_json())
        print(model_name, flush=True)
        results[model_name] = run(model, frames, configs, args.threads)
    meta = {"size": args.size, "frames": args.frames, "calib_frames": args.calib_frames, "threads": args.threads,
            "clip": "tools/camera_clip.py: noise 2/255, flicker 1%, 2 moving objects, H.264 crf 23; "
                    "tuning clip: seed 1, this clip: seed 0"}
    save_report(str(out / f"approx_{args.size}"), {"meta": meta, "results": results, "tuned": tuned},
                report(results, meta))
    plot(results, out / f"approx_{args.size}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
