"""Model benchmarks: reuserun against onnxruntime on the built-in architectures and scenarios.

For each model and scenario, onnxruntime and one reuserun session per policy run the same frames
interleaved frame by frame, with the same thread count; times are medians over frames 1.. (frame
0 is dense for reuserun). Each policy runs in its own pass with onnxruntime, so rows of one
model are measured seconds to minutes apart; to compare the auto policy with the best fixed one
(the fastest of tiles, rects, rect and dense in those passes), the two also run interleaved frame
by frame in one pass of their own (each evicts the other's caches alike), and the table gives
auto's median time over the best fixed policy's. Also measured: 1 vs 2 threads on full frames,
and the memory each runtime holds (resident-set growth in a fresh process). Writes JSON, a markdown table and a PNG
of speedup against changed-area fraction with the ideal 1/mac_fraction beside it.

    python bench/models.py --size 320 --frames 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from reuserun import sources, zoo
from reuserun.bench import cpu_name, interleaved, run_bench, thread_scaling

POLICIES = ["auto", "auto+ort", "tiles", "rects", "rect", "dense"]
FIXED = ["tiles", "rects", "rect", "dense"]  # the policies auto chooses between


def memory_probe(model_path: str, size: int, runtime: str) -> int:
    """Resident-set growth of creating a session from the file and running two frames, in a
    fresh process whose libraries are already imported (both runtimes measured alike)."""
    code = f"""
import os, sys
import numpy as np
import onnxruntime, reuserun
from reuserun import sources
from reuserun.bench import ort_session
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
frames = list(sources.synthetic_stream((1, 3, {size}, {size}), "objects", frames=2))
before = rss()
if {runtime!r} == "ort":
    s = ort_session(open({model_path!r}, "rb").read(), 2)
else:
    s = reuserun.InferenceSession({model_path!r})
for f in frames:
    s.run(None, {{"images": f}})
print(rss() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def duel(model_proto, frames, policy: str, threads: int, at_least: int = 72) -> float:
    """auto's median time per frame over `policy`'s, the two sessions interleaved frame by frame
    in one pass over the frames repeated to at least `at_least` (the stream jumps back at each
    repeat: one large change a repeat, which the median passes over; still frames take about
    0.1 ms, and a few dozen of them are noise on this VM)."""
    import reuserun
    frames = frames + frames[1:] * -(-(at_least - len(frames)) // max(1, len(frames) - 1))
    sess = {p: reuserun.InferenceSession(model_proto, policy=p, threads=threads) for p in ("auto", policy)}
    times = interleaved(frames, {p: (lambda f, s=s: s.run(None, {"images": f})) for p, s in sess.items()})
    return float(np.median(times["auto"][1:]) / np.median(times[policy][1:]))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in results})
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in results if r["model"] == model and r["scenario"] != "still"]
        # the dense policy never diffs; place every policy at the scenario's measured change
        changed = {r["scenario"]: r["changed_fraction"] for r in rows if r["policy"] != "dense"}
        for policy in POLICIES:
            pts = sorted((changed.get(r["scenario"], 1.0), r["speedup"], r["ideal_speedup"])
                         for r in rows if r["policy"] == policy)
            if not pts:
                continue
            x, y, ideal = zip(*pts)
            line, = ax.plot(x, y, "o-", label=policy, markersize=4)
            if policy == "auto":
                ax.plot(x, ideal, "--", color=line.get_color(), alpha=0.6, label="auto ideal 1/mac")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("changed fraction of input pixels")
        ax.set_ylabel("speedup over onnxruntime")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(zoo.IMAGE_MODELS))
    p.add_argument("--scenarios", default=",".join(sources.SCENARIOS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policies = args.policies.split(",")
    results, extra, duels = [], {}, []
    for model in args.models.split(","):
        proto = zoo.MODELS[model](args.size)
        for scenario in args.scenarios.split(","):
            frames = list(sources.synthetic_stream((1, 3, args.size, args.size), scenario, frames=args.frames))
            res = run_bench(proto, frames, policies, threads=args.threads, model_name=model,
                            source_name=scenario, progress=False)
            fixed = [r for r in res.results if r.policy in FIXED]
            best = max(fixed, key=lambda r: r.speedup).policy if fixed and "auto" in policies else None
            for r in res.results:
                results.append({"model": model, "scenario": scenario, **r.__dict__})
            if best is not None:
                duels.append({"model": model, "scenario": scenario, "best_fixed": best,
                              "auto_time_over_best": duel(proto, frames, best, args.threads)})
                print(f"{model:<10} {scenario:<8} auto / {best}: {duels[-1]['auto_time_over_best']:.2f}", flush=True)
                print(f"{model:<10} {scenario:<8} {r.policy:<6} speedup {r.speedup:6.2f}x  "
                      f"mac {r.mac_fraction:.4f} (ideal {r.ideal_speedup:7.1f}x)  "
                      f"changed {r.changed_fraction:.4f}  err {r.max_abs_err:.1e}", flush=True)
        full = list(sources.synthetic_stream((1, 3, args.size, args.size), "full", frames=12))
        extra[model] = {"threads": thread_scaling(proto, full)}
        if not args.no_memory:
            path = out / f"{model}_{args.size}.onnx"
            path.write_bytes(proto.SerializeToString())
            extra[model]["memory_bytes"] = {"reuserun": memory_probe(str(path), args.size, "reuserun"),
                                            "onnxruntime": memory_probe(str(path), args.size, "ort")}
            path.unlink()
        print(model, json.dumps(extra[model]), flush=True)
    meta = {"size": args.size, "frames": args.frames, "threads": args.threads,
            "machine": f"{os.cpu_count()} cores, {os.uname().machine}, {cpu_name()}"}
    stem = f"models_{args.size}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results, "extra": extra,
                                                  "auto_vs_best_fixed": duels}, indent=1))
    (out / f"{stem}.md").write_text(table(results, extra, meta, duels))
    plot(results, out / f"{stem}.png")
    print(table(results, extra, meta, duels))
    return 0


def table(results, extra, meta, duels=()) -> str:
    lines = [f"Speedup over onnxruntime (median ms/frame ratio, interleaved, {meta['threads']} threads, "
             f"{meta['size']}x{meta['size']}, {meta['frames']} frames; {meta['machine']}). "
             "In brackets: the ideal 1/mac_fraction.", "",
             "| model | scenario | " + " | ".join(POLICIES) + " |",
             "|---|---|" + "---|" * len(POLICIES)]
    keyed = {(r["model"], r["scenario"], r["policy"]): r for r in results}
    for model in dict.fromkeys(r["model"] for r in results):
        for scenario in dict.fromkeys(r["scenario"] for r in results):
            cells = []
            for p in POLICIES:
                r = keyed.get((model, scenario, p))
                ideal = "-" if r is None or r["ideal_speedup"] > 1e6 else f"{r['ideal_speedup']:.1f}x"
                cells.append("" if r is None else f"{r['speedup']:.2f}x ({ideal})")
            lines.append(f"| {model} | {scenario} | " + " | ".join(cells) + " |")
    lines += ["", "| model | reuserun 1->2 threads | onnxruntime 1->2 threads | memory reuserun | memory onnxruntime |",
              "|---|---|---|---|---|"]
    for model, e in extra.items():
        mem = e.get("memory_bytes", {})
        lines.append(f"| {model} | {e['threads']['reuserun_scaling']:.2f}x | {e['threads']['ort_scaling']:.2f}x | "
                     f"{mem.get('reuserun', 0) / 2**20:.0f} MiB | {mem.get('onnxruntime', 0) / 2**20:.0f} MiB |")
    if duels:
        lines += ["", "auto's time over the best fixed policy's, the two interleaved in one pass "
                      "(below 1: auto is faster):",
                  "", "| model | " + " | ".join(dict.fromkeys(d["scenario"] for d in duels)) + " |",
                  "|---|" + "---|" * len(dict.fromkeys(d["scenario"] for d in duels))]
        keyed = {(d["model"], d["scenario"]): d for d in duels}
        for model in dict.fromkeys(d["model"] for d in duels):
            cells = [keyed.get((model, sc)) for sc in dict.fromkeys(d["scenario"] for d in duels)]
            lines.append(f"| {model} | " + " | ".join(
                "" if d is None else f"{d['auto_time_over_best']:.2f} ({d['best_fixed']})" for d in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
