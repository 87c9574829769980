"""Coverage: does every real model that onnxruntime runs also run in reuserun, with its outputs?

For each model of tools/real_models.py's manifest, at its native shape: load it in reuserun (and
note which nodes run in embedded onnxruntime partitions), run a few frames of the `object`
scenario through an `auto` session, a policy="dense" session and onnxruntime, and report the
largest difference from onnxruntime relative to the output's scale, and whether every `auto`
frame is bit-identical to the dense one. No timing: bench/real.py measures speed.

    PYTHONPATH=. python bench/coverage.py                       # writes bench/out/coverage.{md,json}
    PYTHONPATH=. python bench/coverage.py --models basic_pitch --frames 3
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import reuserun
from reuserun.bench import markdown_table, ort_session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real import DEFAULT_MANIFEST, make_frames, one_line  # noqa: E402


def partitions(sess) -> str:
    """The op types the session hands to onnxruntime partitions, with counts."""
    ops = Counter(n.attrs["op_type"] for n in sess.graph.nodes if n.op == "onnx_op")
    return ", ".join(f"{op} x{c}" if c > 1 else op for op, c in sorted(ops.items())) or "-"


def check_model(entry: dict, folder: Path, frames_n: int, threads: int) -> dict:
    path = folder / entry["file"]
    row = {"model": entry["name"], "exporter": entry["exporter"],
           "shape": "x".join(map(str, entry["shape"])) + (f" {entry['layout']}" if entry["layout"] != "NCHW" else "")}
    try:
        ort = ort_session(path.read_bytes(), threads)
    except Exception as e:
        return row | {"runs": f"onnxruntime cannot: {one_line(e)}"}
    shape, name = tuple(entry["shape"]), entry["input"]
    try:
        auto = reuserun.InferenceSession(str(path), threads=threads, input_shape=shape)
        dense = reuserun.InferenceSession(str(path), policy="dense", threads=threads, input_shape=shape)
        worst, identical, macs = 0.0, True, []
        for f in make_frames(entry["shape"], entry["layout"], "object", frames_n):
            got = auto.run(None, {name: f.copy()})
            macs.append(auto.stats["mac_fraction"])
            ref = dense.run(None, {name: f.copy()})
            want = ort.run(None, {name: f.copy()})
            identical &= all(a.tobytes() == b.tobytes() for a, b in zip(got, ref))
            for a, b in zip(got, want):
                scale = max(float(np.abs(b).max()), 1e-6)
                worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / scale)
    except Exception as e:
        return row | {"runs": f"no: {one_line(e)}"}
    return row | {"runs": "yes", "partitions": partitions(auto), "max_rel_diff": worst,
                  "bit_identical_to_dense": identical, "mac_fraction_last": macs[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    p.add_argument("--models", default="", help="comma-separated names (default: all in the manifest)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    manifest = Path(args.manifest)
    entries = json.loads(manifest.read_text())["models"]
    if args.models:
        wanted = set(args.models.split(","))
        entries = [e for e in entries if e["name"] in wanted]
    rows = []
    for entry in entries:
        rows.append(check_model(entry, manifest.parent, args.frames, args.threads))
        r = rows[-1]
        print(f"{r['model']:<28} {r['runs'][:80]:<10} {r.get('partitions', '')}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.json").write_text(json.dumps({"frames": args.frames, "threads": args.threads, "rows": rows},
                                                  indent=1) + "\n")
    cols = [("model", lambda r: r["model"]), ("exporter", lambda r: r["exporter"]), ("shape", lambda r: r["shape"]),
            ("runs", lambda r: r["runs"]), ("in onnxruntime partitions", lambda r: r.get("partitions", "")),
            ("max diff / max abs (vs onnxruntime)",
             lambda r: f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else ""),
            ("auto = dense, bit for bit",
             lambda r: {True: "yes", False: "NO"}.get(r.get("bit_identical_to_dense"), ""))]
    ok = sum(r["runs"] == "yes" for r in rows)
    text = (f"Coverage of the real-export suite (tools/real_models.py): {ok} of {len(rows)} models run in reuserun; "
            f"{args.frames} frames of the `object` scenario each, {args.threads} threads.\n\n"
            + markdown_table(cols, rows) + "\n")
    (out / "coverage.md").write_text(text)
    print(text)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
