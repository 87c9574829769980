"""Measure reuserun against onnxruntime on the same frames.

Method: one onnxruntime session and one reuserun session per policy, all with the same thread
count, run frame by frame in turn (interleaved, in a random order each frame), so machine noise
and cache effects hit them alike. Times are
medians over the frames after the first (the first frame is dense for every reuse session).
onnxruntime's thread pool is told not to spin between runs, so it does not steal the cores from
the session that runs next; reuserun's OpenMP threads likewise spin only briefly.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from reuserun.runtime.ort_backend import ort_session  # noqa: F401 (the benches' baseline)


@dataclass
class PolicyResult:
    policy: str
    ms_per_frame: float          # median over frames 1.. (reuserun)
    ort_ms_per_frame: float      # median over the same frames (onnxruntime)
    speedup: float               # ort median / reuserun median
    mac_fraction: float          # mean over frames 1..
    changed_fraction: float      # mean input change over frames 1..
    max_abs_err: float           # max |reuserun - onnxruntime| over all frames and outputs
    ideal_speedup: float         # 1 / mac_fraction


@dataclass
class BenchResult:
    model: str
    source: str
    frames: int
    threads: int
    threshold: float
    input_shape: list
    dense_macs: int
    results: list[PolicyResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def interleaved(frames, runners: dict, after_frame=None, progress: bool = False) -> dict:
    """Run every runner (key -> fn(frame) -> outputs) on every frame, in a fresh random order
    each frame so no runtime always inherits another's cache and threads. An array frame is
    copied afresh for each runner just before its call, as a decoder or camera would hand it
    over: shared, whoever ran first would pay its read from memory (on a still frame, most of
    the time). Returns the seconds per frame of each runner; after_frame(outputs by key) is
    called after each frame."""
    keys = list(runners)
    times = {k: [] for k in keys}
    rng = np.random.default_rng(0)
    it = frames
    if progress:
        from tqdm import tqdm
        it = tqdm(frames, desc="bench", unit="frame", leave=False)
    for f in it:
        outs = {}
        for i in rng.permutation(len(keys)).tolist():
            k = keys[i]
            arg = f.copy() if isinstance(f, np.ndarray) else f
            t0 = time.perf_counter()
            outs[k] = runners[k](arg)
            times[k].append(time.perf_counter() - t0)
        if after_frame is not None:
            after_frame(outs)
    return times


def paired_passes(frames, baseline, runners: dict, after_frame=None, progress: bool = False) -> dict:
    """Time each runner (key -> fn(frame) -> outputs) in its own pass, interleaved frame by frame
    with `baseline` (onnxruntime): timing them all in one loop would let each evict the others'
    caches, which a real stream (one session) never sees. Returns key -> (the runner's seconds
    per frame, the baseline's in the same pass); after_frame(key, outputs by key, the
    baseline's under None) is called after each frame."""
    result = {}
    for key, fn in runners.items():
        after = None if after_frame is None else (lambda outs, key=key: after_frame(key, outs))
        times = interleaved(frames, {None: baseline, key: fn}, after, progress)
        result[key] = (times[key], times[None])
    return result


def thread_scaling(model_proto, frames, threads: int = 2) -> dict:
    """Dense runs on 1 and `threads` threads, reuserun's and onnxruntime's, the four interleaved
    over the frames (NCHW arrays for the model's one input): median ms per frame of each, and
    each runtime's 1 -> `threads` speed-up."""
    from reuserun.runtime.session import InferenceSession

    runs = {}
    for t in sorted({1, threads}):
        runs[f"reuserun_{t}"] = InferenceSession(model_proto, policy="dense", threads=t)
        runs[f"ort_{t}"] = ort_session(model_proto.SerializeToString(), t)
    name = runs["ort_1"].get_inputs()[0].name
    times = interleaved(frames, {k: (lambda f, s=s: s.run(None, {name: f})) for k, s in runs.items()})
    ms = {k: float(np.median(v[1:])) * 1e3 for k, v in times.items()}
    return {"ms": ms, "reuserun_scaling": ms["reuserun_1"] / ms[f"reuserun_{threads}"],
            "ort_scaling": ms["ort_1"] / ms[f"ort_{threads}"]}


def run_bench(model_proto, frames, policies=("auto",), threads: int = 2, threshold: float = 0.0,
              model_name: str = "model", source_name: str = "synthetic", progress: bool = True,
              tile: int | None = None, layer_thresholds=None) -> BenchResult:
    """frames: a list of NCHW float32 arrays for the model's single input. Each policy runs in
    its own pass with onnxruntime (paired_passes); each ratio uses onnxruntime's median from the
    same pass. A policy named "P+ort" is P with dense_backend="onnxruntime"."""
    from reuserun.runtime.session import InferenceSession

    frames = list(frames)
    if len(frames) < 2:
        raise ValueError("a benchmark needs at least two frames")
    ort_sess = ort_session(model_proto.SerializeToString(), threads)
    name = ort_sess.get_inputs()[0].name
    sessions = {}
    for p in policies:
        policy, _, backend = p.partition("+")  # "auto+ort": full-frame changes go to onnxruntime
        if backend not in ("", "ort"):
            raise ValueError(f"unknown policy {p!r}: a policy, optionally followed by +ort")
        sessions[p] = InferenceSession(model_proto, policy=policy, threshold=threshold, threads=threads, tile=tile,
                                       input_shape=frames[0].shape, layer_thresholds=layer_thresholds,
                                       dense_backend="onnxruntime" if backend else "reuserun")
    macs = {p: [] for p in policies}
    changed = {p: [] for p in policies}
    err = {p: 0.0 for p in policies}

    def record(p, outs):
        s = sessions[p]
        macs[p].append(s.stats["mac_fraction"])
        changed[p].append(s.stats["changed_fraction"])
        err[p] = max(err[p], max(float(np.max(np.abs(a - b))) for a, b in zip(outs[p], outs[None])))

    times = paired_passes(frames, lambda f: ort_sess.run(None, {name: f}),
                          {p: (lambda f, s=s: s.run(None, {name: f})) for p, s in sessions.items()},
                          record, progress)
    threshold = next(iter(sessions.values())).threshold if sessions else threshold  # a tuned file sets it
    res = BenchResult(model_name, source_name, len(frames), threads, threshold, list(frames[0].shape),
                      next(iter(sessions.values())).stats["dense_macs"] if sessions else 0)
    for p in policies:
        t_rr, t_ort = times[p]
        ort_med = float(np.median(t_ort[1:]))
        med = float(np.median(t_rr[1:]))
        mf = float(np.mean(macs[p][1:]))
        res.results.append(PolicyResult(p, med * 1e3, ort_med * 1e3, ort_med / med, mf,
                                        float(np.mean(changed[p][1:])), err[p],
                                        1.0 / mf if mf > 0 else float("inf")))
    return res


def format_table(res: BenchResult) -> str:
    lines = [f"model {res.model}  input {tuple(res.input_shape)}  source {res.source}  frames {res.frames}  "
             f"threads {res.threads}  threshold {res.threshold}",
             f"dense MACs per frame {res.dense_macs / 1e9:.3f} G; onnxruntime median "
             f"{res.results[0].ort_ms_per_frame:.2f} ms/frame" if res.results else "",
             f"{'policy':<8} {'ms/frame':>9} {'speedup':>8} {'mac_frac':>9} {'ideal':>7} {'changed':>8} {'max|d|':>9}"]
    for r in res.results:
        lines.append(f"{r.policy:<8} {r.ms_per_frame:>9.2f} {r.speedup:>7.2f}x {r.mac_fraction:>9.4f} "
                     f"{r.ideal_speedup:>6.1f}x {r.changed_fraction:>8.4f} {r.max_abs_err:>9.2e}")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name, for the machine line of a report."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def markdown_table(columns, rows) -> str:
    """A markdown table: columns is [(title, row -> cell text)]."""
    lines = ["| " + " | ".join(t for t, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r) for _, fmt in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_report(prefix: str, data, md: str) -> None:
    """Write PREFIX.json and PREFIX.md (creating the folder) and say so."""
    import json
    from pathlib import Path
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(prefix + ".json").write_text(json.dumps(data, indent=2))
    Path(prefix + ".md").write_text(md + "\n")
    print(f"wrote {prefix}.json and {prefix}.md")
