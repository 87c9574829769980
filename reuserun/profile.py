"""`reuserun profile`: where a frame's time goes, per step, beside onnxruntime's own per-node
profile of the same frames (its enable_profiling JSON), matched by node name."""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict

import numpy as np


def ort_node_times(model_bytes: bytes, input_name: str, frames: list, threads: int) -> dict:
    """onnxruntime's per-node kernel time (ms per frame) and its whole run's time, from its own
    profiler, over frames."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    folder = tempfile.mkdtemp(prefix="reuserun-ort-profile-")
    so.profile_file_prefix = os.path.join(folder, "ort")
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    for f in frames:
        sess.run(None, {input_name: f})
    path = sess.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    nodes, runs = defaultdict(float), []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            nodes[e["name"][: -len("_kernel_time")]] += e["dur"] / 1e3
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            runs.append(e["dur"] / 1e3)
    n = max(len(frames), 1)
    return {"nodes": {k: v / n for k, v in nodes.items()}, "frame_ms": float(np.median(runs)) if runs else 0.0,
            "file": path}


def ort_names(proto) -> dict:
    """ONNX node name -> the names onnxruntime may give it in its profile: its own, or, once its
    NCHWc layout rewrote a conv, the conv's output tensor and "_nchwc"."""
    return {n.name: [n.name, n.output[0] + "_nchwc"] for n in proto.graph.node if n.name and n.output}


def compare(reuserun_table: dict, ort: dict, aliases: dict | None = None) -> dict:
    """reuserun's profile rows with onnxruntime's time for the same node (ORT fuses nodes too and
    keeps the first one's name; a node it renamed otherwise stays unmatched)."""
    rows = []
    for r in reuserun_table["steps"]:
        names = list((aliases or {}).get(r["name"], [r["name"]]))
        if r.get("output"):  # onnxruntime names a conv it fused with what follows by the last output
            names.append(r["output"] + "_nchwc")
        ort_ms = next((ort["nodes"][n] for n in names if n in ort["nodes"]), None)
        rows.append(dict(r, ort_ms=ort_ms))
    matched = sum(r["ort_ms"] is not None for r in rows)
    return dict(reuserun_table, steps=rows, ort_frame_ms=ort["frame_ms"], matched=matched,
                ort_profile=ort["file"])


def format_table(report: dict, top: int) -> str:
    lines = [f"reuserun {report['frame_ms']:.2f} ms/frame (steps {report['steps_ms']:.2f}, "
             f"outside the steps {report['overhead_ms']:.2f}); onnxruntime {report['ort_frame_ms']:.2f} ms/frame; "
             f"{report['frames']} frames; {report['matched']} of {len(report['steps'])} steps matched an "
             f"onnxruntime node",
             f"{'step':40s} {'op':16s} {'ms':>7s} {'share':>6s} {'GMAC/s':>7s} {'computed':>9s} {'ort ms':>7s}"]
    for r in sorted(report["steps"], key=lambda r: -r["ms"])[:top]:
        op = r["op"] + (f"+{r['act']}" if r["act"] else "")
        ort_ms = "" if r["ort_ms"] is None else f"{r['ort_ms']:.3f}"
        frac = r["positions"] / r["total_positions"] if r["total_positions"] else 0.0
        lines.append(f"{r['name'][:40]:40s} {op[:16]:16s} {r['ms']:7.3f} {100 * r['share']:5.1f}% "
                     f"{r['gmac_s']:7.1f} {100 * frac:8.1f}% {ort_ms:>7s}")
    return "\n".join(lines)


def plot(report: dict, path: str, top: int) -> None:
    """The top steps by reuserun's time, with onnxruntime's for the same node, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["steps"], key=lambda r: -r["ms"])[:top][::-1]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.5))
    ax.barh(y + 0.2, [r["ms"] for r in rows], 0.4, label="reuserun")
    ax.barh(y - 0.2, [r["ort_ms"] or 0.0 for r in rows], 0.4, label="onnxruntime (same node)")
    ax.set_yticks(y, [f"{r['name'][:32]} ({r['op']})" for r in rows], fontsize=7)
    ax.set_xlabel("ms per frame")
    ax.set_title(f"reuserun {report['frame_ms']:.1f} ms/frame, onnxruntime {report['ort_frame_ms']:.1f} ms/frame")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
