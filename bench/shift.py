"""Shift reuse: sliding audio windows and scrolling pages, against dense onnxruntime.

audio:  the built-in keyword-spotting net (raw 16 kHz audio, 1 s window) over speech-like
        audio (or --audio PATH) with a 10 ms hop: each frame is the last one moved by 160
        samples plus 160 new ones.
scroll: a page of text (rendered with Pillow) scrolling up by --scroll px per frame through
        320-px text-detection-style models: the built-in U-Net (strides to 8) and a DBNet-like
        PyTorch export (strides to 32, FPN).

Each reuserun configuration runs interleaved frame by frame with onnxruntime in a random order
(its own pass), same thread count, medians; every frame is checked against onnxruntime and
against reuserun's own dense policy (bit-identical).

    python bench/shift.py --frames 60
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import reuserun
from reuserun import streams, zoo
from reuserun.bench import markdown_table, ort_session, paired_passes, save_report

OUT = Path(__file__).resolve().parent / "out"


def text_page(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A screen-like page: dark text lines of random words on a light background, (1, 3, H, W)."""
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    y = 6
    while y < height - 16:
        x = 8 + int(rng.integers(0, 20))
        line = " ".join("".join(rng.choice(letters, int(rng.integers(2, 9)))) for _ in range(12))
        draw.text((x, y), line, fill=(20, 20, 30), font=font)
        y += int(rng.choice([18, 18, 18, 36]))  # some paragraph gaps
    a = np.asarray(img, np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)
    return np.ascontiguousarray(a)


def dbnet_320():
    import torch_models as tm
    ctor, _ = tm.TORCH_MODELS["dbnet"]
    tm.TORCH_MODELS["dbnet_320"] = (ctor, (1, 3, 320, 320))
    module, shape = tm.build("dbnet_320")
    return tm.export(module, shape)


def run_case(name: str, model, frames: list, threads: int) -> dict:
    """Each reuserun configuration is timed in its own pass with onnxruntime (paired_passes)."""
    inp = reuserun.InferenceSession(model).get_inputs()[0].name
    ort = ort_session(model.SerializeToString(), threads)
    dense = reuserun.InferenceSession(model, policy="dense", threads=threads)
    want = [dense.run(None, {inp: f}) for f in frames]  # the reference for bit-identity, untimed
    configs = {"reuserun": {}, "reuserun_no_shift": {"shift": False}, "reuserun_dense": {"policy": "dense"}}
    sessions = {key: reuserun.InferenceSession(model, threads=threads, **opts) for key, opts in configs.items()}
    for sess in sessions.values():
        sess.run(None, {inp: frames[0]})
    macs, found, err, seen = [], [], [0.0], dict.fromkeys(configs, 0)

    def check(key, outs):
        seen[key] += 1
        if key == "reuserun":
            macs.append(sessions[key].stats["mac_fraction"])
            found.append(sessions[key].stats["shift"])
        for a, b, c in zip(outs[key], want[seen[key]], outs[None]):
            assert a.tobytes() == b.tobytes(), f"{key} is not bit-identical to dense"
            err[0] = max(err[0], float(np.abs(a - c).max()))

    times = paired_passes(frames[1:], lambda f: ort.run(None, {inp: f}),
                          {key: (lambda f, s=s: s.run(None, {inp: f})) for key, s in sessions.items()},
                          check, progress=True)
    med, speedup = {}, {}
    for key, (t, t_ort) in times.items():
        med[key] = float(np.median(t))
        med[f"onnxruntime ({key} pass)"] = float(np.median(t_ort))
        speedup[key] = med[f"onnxruntime ({key} pass)"] / med[key]
    mac = float(np.mean(macs))
    return {"case": name, "frames": len(frames) - 1, "threads": threads, "median_s": med,
            "speedup": speedup["reuserun"], "speedup_no_shift": speedup["reuserun_no_shift"],
            "speedup_dense": speedup["reuserun_dense"], "mac_fraction": mac, "ideal": 1.0 / mac,
            "shift_found": sum(f is not None for f in found) / len(found),
            "max_abs_err_vs_onnxruntime": err[0]}


def table(rows) -> str:
    return markdown_table([
        ("case", lambda r: r["case"]), ("frames", lambda r: str(r["frames"])),
        ("shift found", lambda r: f"{r['shift_found']:.0%}"), ("mac_fraction", lambda r: f"{r['mac_fraction']:.4f}"),
        ("ideal", lambda r: f"{r['ideal']:.1f}x"), ("speedup (shift)", lambda r: f"{r['speedup']:.2f}x"),
        ("without shift", lambda r: f"{r['speedup_no_shift']:.2f}x"), ("dense", lambda r: f"{r['speedup_dense']:.2f}x"),
        ("max abs err", lambda r: f"{r['max_abs_err_vs_onnxruntime']:.1e}")], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scroll", type=int, default=8, help="pixels the page moves per frame")
    p.add_argument("--audio", default=None, help="an audio file instead of the synthetic signal")
    p.add_argument("--cases", default="audio,scroll-unet,scroll-dbnet")
    p.add_argument("--out", default=str(OUT / "shift"))
    args = p.parse_args(argv)
    cases = args.cases.split(",")
    rows = []
    if "audio" in cases:
        kws = zoo.kws_1d()
        spec = f"audio:{args.audio}" if args.audio else "synthetic-audio"
        frames = streams.frames_from_spec(spec, (1, 1, 16000), args.frames + 1)
        rows.append(run_case("kws 1 s window, 10 ms hop", kws, frames, args.threads))
    page = text_page(320, 320 + args.scroll * (args.frames + 1))
    frames = [np.ascontiguousarray(page[:, :, k * args.scroll:k * args.scroll + 320]) for k in range(args.frames + 1)]
    if "scroll-unet" in cases:
        rows.append(run_case(f"unet 320, scroll {args.scroll} px", zoo.unet_like(320), frames, args.threads))
    if "scroll-dbnet" in cases:
        rows.append(run_case(f"dbnet 320, scroll {args.scroll} px", dbnet_320(), frames, args.threads))
    md = table(rows)
    print(md)
    save_report(args.out, rows, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
