"""Real models: reuserun against onnxruntime on ONNX files that this project did not write.

Reads the manifest that tools/real_models.py writes (paddle2onnx, keras2onnx, torch.onnx
TorchScript and dynamo, ultralytics exports) and runs each model at its native shape (batch 1) on
synthetic streams from reuserun.sources at that shape (NHWC models get the NCHW frames transposed),
and, as the scenario `footage` (not run by default), on real fixed-camera footage: the first
frames of OpenCV's vtest.avi (tools/footage.py fetches it from Debian's opencv-doc), scaled to
the model's input by PyAV.
For each scenario and policy, one onnxruntime session and one reuserun session with the same
thread count run the same frames interleaved frame by frame (reuserun.bench.interleaved, a fresh
random order each frame), each policy in its own pass with onnxruntime as in reuserun.bench.run_bench;
times are medians over frames 1.. (frame 0 is dense for reuserun).

Policies: `auto` (the default session) and `auto+ort` (auto with dense_backend="onnxruntime").
Reported per model, scenario and policy: ratio = onnxruntime's median / reuserun's (above 1:
reuserun is faster), mean mac_fraction, the ideal 1/mac_fraction, the fraction of it reached
(ratio * mac_fraction), max |reuserun - onnxruntime| over all frames and outputs, and, for `auto`,
whether every frame's outputs are bit-identical (.tobytes()) to a policy="dense" reuserun session
run on the same frames afterwards (untimed). A model that reuserun cannot load is reported with
its one-line error; the others go on. With very few frames (--frames 3), `auto+ort` on `full` is
dominated by frame 1, the first frame handed to its embedded onnxruntime session, which pays that
session's first run; from a dozen frames on the median passes over it.

    python tools/real_models.py --torch-python /tmp/rr/xenv/bin/python     # makes the models
    PYTHONPATH=. python bench/real.py                                        # all of them
    PYTHONPATH=. python bench/real.py --models ppocr_cls,mtcnn_rnet --frames 3 --out /tmp/real
    python tools/footage.py && PYTHONPATH=. python bench/real.py --scenarios footage --policies auto
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import reuserun
from reuserun import sources, streams
from reuserun.bench import cpu_name, interleaved, markdown_table, ort_session

DEFAULT_MANIFEST = Path("~/.cache/reuserun/real/manifest.json").expanduser()
SCENARIOS = ("full", "still", "object", "objects")
# real fixed-camera footage (tools/footage.py): OpenCV's vtest.avi from Debian's opencv-doc
FOOTAGE = "footage"
DEFAULT_FOOTAGE = Path("~/.cache/reuserun/footage/vtest.avi").expanduser()
POLICIES = {"auto": {}, "auto+ort": {"dense_backend": "onnxruntime"}}


def one_line(e: BaseException, limit: int = 300) -> str:
    """The error as one line: its lines joined (an UnsupportedOpsError lists the ops below its first)."""
    missing = getattr(e, "missing", None)  # UnsupportedOpsError: op type -> nodes
    if isinstance(missing, dict):
        counts = ", ".join(f"{op} ({len(nodes)} nodes)" for op, nodes in sorted(missing.items()))
        text = "unsupported op types " + counts
    else:
        text = " ".join(l.strip() for l in str(e).strip().splitlines() if l.strip())
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def audio_windows(shape, scenario: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """n windows (N, samples, 1) of a synthetic signal (tones and noise, within [-1, 1]):
    `full` a fresh signal each window, `still` the same one, `object` one 256-sample click at a
    random place on a fixed signal, `objects` four; `footage` has no audio and gives none."""
    if scenario == FOOTAGE:
        return []
    rng = np.random.default_rng(seed)
    samples = shape[1]
    t = np.arange(samples) / 22050.0

    def signal():
        tones = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 2000, 3))
        return (tones + 0.05 * rng.standard_normal(samples)).astype(np.float32)

    base = signal()
    frames = []
    for _ in range(n):
        x = signal() if scenario == "full" else base.copy()
        for _ in range({"object": 1, "objects": 4}.get(scenario, 0)):
            at = int(rng.integers(0, samples - 256))
            x[at:at + 256] += 0.3 * rng.standard_normal(256).astype(np.float32)
        frames.append(np.ascontiguousarray(np.broadcast_to(x.reshape(1, samples, 1), tuple(shape))))
    return frames


def make_frames(shape, layout: str, scenario: str, n: int, footage: Path = DEFAULT_FOOTAGE) -> list[np.ndarray]:
    """n frames of the model's native shape, synthetic or the footage's first n scaled to it, in
    [0, 1]; NHWC ones are made NCHW and transposed; audio windows for layout "audio"."""
    if layout == "audio":
        return audio_windows(shape, scenario, n)
    nchw = (shape[0], shape[3], shape[1], shape[2]) if layout == "NHWC" else tuple(shape)
    if scenario == FOOTAGE:
        frames = streams.video(str(footage), nchw, n, 0)
    else:
        frames = list(sources.synthetic_stream(nchw, scenario, frames=n))
    if layout == "NHWC":
        return [np.ascontiguousarray(f.transpose(0, 2, 3, 1)) for f in frames]
    return frames


def digest(outs) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in outs:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def bench_pass(frames, name: str, ort_sess, sess, keep_digests: bool) -> dict:
    """One policy's pass: onnxruntime and `sess` interleaved frame by frame."""
    macs, changed, backends, digests = [], [], [], []
    err = [0.0, 0.0]  # max |d|, max |onnxruntime output|

    def after(outs):
        st = sess.stats
        macs.append(st["mac_fraction"])
        changed.append(st["changed_fraction"])
        backends.append(st.get("backend", "reuserun"))
        if keep_digests:
            digests.append(digest(outs["rr"]))
        for a, b in zip(outs["rr"], outs["ort"]):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if a.shape != b.shape:
                err[0] = float("inf")
                continue
            if a.size:
                err[0] = max(err[0], float(np.max(np.abs(a - b))))
                err[1] = max(err[1], float(np.max(np.abs(b))))

    sess.reset()
    times = interleaved(frames, {"ort": lambda f: ort_sess.run(None, {name: f}),
                                 "rr": lambda f: sess.run(None, {name: f})}, after_frame=after)
    ort_ms = float(np.median(times["ort"][1:])) * 1e3
    rr_ms = float(np.median(times["rr"][1:])) * 1e3
    mf = float(np.mean(macs[1:]))
    ratio = ort_ms / rr_ms
    return {"ort_ms": ort_ms, "reuserun_ms": rr_ms, "ratio": ratio, "mac_fraction": mf,
            "ideal": 1.0 / mf if mf > 0 else None, "of_ideal": ratio * mf if mf > 0 else None,
            "changed_fraction": float(np.mean(changed[1:])),
            "ort_frames": sum(b == "onnxruntime" for b in backends[1:]),
            "max_abs_err": err[0], "max_rel_err": err[0] / err[1] if err[1] > 0 else err[0],
            "_digests": digests}


def bench_model(entry: dict, folder: Path, scenarios, policies, frames_n: int, threads: int,
                footage: Path = DEFAULT_FOOTAGE) -> tuple[list, str | None]:
    """All scenarios and policies of one model; returns (rows, load error or None)."""
    path = folder / entry["file"]
    shape, layout, name = entry["shape"], entry["layout"], entry["input"]
    try:
        ort_sess = ort_session(path.read_bytes(), threads)
    except Exception as e:
        return [], f"onnxruntime: {one_line(e)}"
    try:
        sessions = {p: reuserun.InferenceSession(str(path), policy="auto", threads=threads,
                                                 input_shape=tuple(shape), **POLICIES[p]) for p in policies}
        dense = reuserun.InferenceSession(str(path), policy="dense", threads=threads, input_shape=tuple(shape))
    except Exception as e:
        return [], one_line(e)
    rows = []
    base = {"model": entry["name"], "exporter": entry["exporter"], "shape": list(shape), "layout": layout}
    for scenario in scenarios:
        frames = make_frames(shape, layout, scenario, frames_n, footage)
        if not frames:  # footage for an audio model
            continue
        try:
            res = {p: bench_pass(frames, name, ort_sess, sessions[p], keep_digests=(p == "auto"))
                   for p in policies}
            if "auto" in res:  # the reference: reuserun's dense run on the same frames, untimed
                dense.reset()
                ref = [digest(dense.run(None, {name: f.copy()})) for f in frames]
                diff = sum(a != b for a, b in zip(res["auto"]["_digests"], ref))
                res["auto"]["bit_exact"] = diff == 0
                res["auto"]["frames_differing"] = diff
        except Exception as e:
            rows.append({**base, "scenario": scenario, "error": one_line(e)})
            print(f"{entry['name']:<26} {scenario:<8} ERROR {one_line(e)}", flush=True)
            continue
        for p, r in res.items():
            r.pop("_digests")
            rows.append({**base, "scenario": scenario, "policy": p, **r})
            print(f"{entry['name']:<26} {scenario:<8} {p:<8} ratio {r['ratio']:6.2f}x  "
                  f"ort {r['ort_ms']:8.2f} ms  rr {r['reuserun_ms']:8.2f} ms  mac {r['mac_fraction']:.4f}  "
                  f"of ideal {_f(r['of_ideal'], '.2f')}  exact {_exact(r)}  max|d| {r['max_abs_err']:.1e}",
                  flush=True)
    return rows, None


def _f(v, fmt: str, none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _exact(r: dict) -> str:
    if "bit_exact" not in r:
        return "-"
    return "yes" if r["bit_exact"] else f"NO ({r['frames_differing']} frames)"


def summary(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "error" not in r]
    lines = []
    for p in dict.fromkeys(r["policy"] for r in ok):
        for scenario, what in (("full", "full-frame"), (FOOTAGE, "footage")):
            some = [r for r in ok if r["policy"] == p and r["scenario"] == scenario]
            if some:
                worst = min(some, key=lambda r: r["ratio"])
                lines.append(f"{p}: {what} ratio median {np.median([r['ratio'] for r in some]):.2f}x, "
                             f"min {worst['ratio']:.2f}x ({worst['model']}) over {len(some)} models")
        obj = [r for r in ok if r["policy"] == p and r["scenario"] == "object" and r["of_ideal"] is not None]
        if obj:
            worst = min(obj, key=lambda r: r["of_ideal"])
            lines.append(f"{p}: min fraction of ideal on object {worst['of_ideal']:.2f} ({worst['model']}), "
                         f"median {np.median([r['of_ideal'] for r in obj]):.2f}")
    exact = [r for r in ok if "bit_exact" in r]
    if exact:
        bad = sorted({f"{r['model']}/{r['scenario']}" for r in exact if not r["bit_exact"]})
        lines.append(f"auto bit-identical to reuserun's dense run: {len(exact) - len(bad)}/{len(exact)} "
                     f"model-scenarios" + (f" (not: {', '.join(bad)})" if bad else ""))
    return lines


def table(rows: list[dict], failures: dict, meta: dict) -> str:
    head = [f"Real models (tools/real_models.py): reuserun vs onnxruntime {meta['onnxruntime']}, "
            f"{meta['threads']} threads each, interleaved frame by frame, medians over frames 1..{meta['frames'] - 1}; "
            f"{meta['machine']}.", "",
            "ratio = onnxruntime ms / reuserun ms (above 1: reuserun faster); ideal = 1/mac_fraction; "
            "of ideal = ratio x mac_fraction; exact = every frame of `auto` bit-identical to reuserun's "
            "dense policy on the same frames.", ""]
    ok = [r for r in rows if "error" not in r]
    cols = [("model", lambda r: r["model"]), ("exporter", lambda r: r["exporter"]),
            ("shape", lambda r: "x".join(map(str, r["shape"]))
             + {"NHWC": " NHWC", "audio": " audio"}.get(r["layout"], "")),
            ("scenario", lambda r: r["scenario"]), ("policy", lambda r: r["policy"]),
            ("ort ms", lambda r: f"{r['ort_ms']:.2f}"), ("reuserun ms", lambda r: f"{r['reuserun_ms']:.2f}"),
            ("ratio", lambda r: f"{r['ratio']:.2f}x"), ("mac_fraction", lambda r: f"{r['mac_fraction']:.4f}"),
            ("ideal", lambda r: _f(r["ideal"], ".1f", "-") + ("x" if r["ideal"] is not None else "")),
            ("of ideal", lambda r: _f(r["of_ideal"], ".2f")), ("exact", _exact),
            ("max abs diff", lambda r: f"{r['max_abs_err']:.1e}")]
    lines = head + [markdown_table(cols, ok), ""]
    lines += [f"Summary: {'; '.join(summary(rows))}." if ok else "Summary: no model ran."]
    errs = [r for r in rows if "error" in r]
    if failures or errs:
        lines += ["", "Not measured:", ""]
        lines += [f"- {m}: {why}" for m, why in failures.items()]
        lines += [f"- {r['model']} / {r['scenario']}: {r['error']}" for r in errs]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="default %(default)s")
    p.add_argument("--models", default="", help="comma-separated names from the manifest (default: all)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--policies", default=",".join(POLICIES), help="some of " + ",".join(POLICIES))
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    p.add_argument("--footage", default=str(DEFAULT_FOOTAGE),
                   help="the video of the footage scenario (default %(default)s, from tools/footage.py)")
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error("--frames must be at least 2 (frame 0 is dense and left out of the medians)")
    manifest_path = Path(args.manifest).expanduser()
    if not manifest_path.is_file():
        p.error(f"no manifest at {manifest_path}: run tools/real_models.py first")
    manifest = json.loads(manifest_path.read_text())
    entries = {e["name"]: e for e in manifest["models"]}
    names = [n for n in args.models.split(",") if n] or list(entries)
    missing = [n for n in names if n not in entries]
    if missing:
        p.error(f"not in the manifest: {missing}; it has {sorted(entries)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in sources.SCENARIOS and s != FOOTAGE]
    if bad:
        p.error(f"unknown scenarios {bad}; expected some of {sources.SCENARIOS + (FOOTAGE,)}")
    footage = Path(args.footage).expanduser()
    if FOOTAGE in scenarios and not footage.is_file():
        p.error(f"no footage at {footage}: run tools/footage.py first")
    policies = [s for s in args.policies.split(",") if s]
    if [s for s in policies if s not in POLICIES]:
        p.error(f"policies must be some of {list(POLICIES)}")

    import onnxruntime
    meta = {"manifest": str(manifest_path), "frames": args.frames, "threads": args.threads,
            "scenarios": scenarios, "policies": policies, "onnxruntime": onnxruntime.__version__,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, {cpu_name()}",
            "omp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    rows, failures = [], {}
    for name in names:
        e = entries[name]
        path = manifest_path.parent / e["file"]
        if not path.is_file():
            failures[name] = f"file missing: {path}"
            print(f"{name:<26} {failures[name]}", flush=True)
            continue
        r, err = bench_model(e, manifest_path.parent, scenarios, policies, args.frames, args.threads, footage)
        if err is not None:
            failures[name] = f"does not load: {err}"
            print(f"{name:<26} {failures[name]}", flush=True)
        rows += r
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real.json").write_text(json.dumps({"meta": meta, "models": {n: entries[n] for n in names},
                                               "results": rows, "failures": failures,
                                               "summary": summary(rows)}, indent=1) + "\n")
    md = table(rows, failures, meta)
    (out / "real.md").write_text(md)
    print(md)
    print(f"wrote {out / 'real.json'} and {out / 'real.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
