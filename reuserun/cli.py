"""reuserun command line: bench, tune, info and occlusion."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from reuserun import ir
from reuserun.runtime import options

# "+ort": frames that changed almost everywhere run in onnxruntime (dense_backend="onnxruntime")
POLICY_CHOICES = ("auto", "auto+ort", "tiles", "rects", "rect", "dense")


def _load_proto(model: str | None, size: int | None):
    """The user's ONNX model, or the built-in default detector."""
    from reuserun import zoo
    if model is None:
        size = size or 320
        return zoo.default_model(size), f"builtin:yolo_like({size})"
    if model.startswith("builtin:"):
        name = model.split(":", 1)[1]
        if name not in zoo.MODELS:
            raise SystemExit(f"unknown built-in model {name!r}; choose from {sorted(zoo.MODELS)}")
        size = size or zoo.DEFAULT_SIZES.get(name, 320)
        return zoo.MODELS[name](size), f"builtin:{name}({size})"
    from reuserun.frontend.loader import parse_model
    try:
        return parse_model(model), os.path.basename(model)
    except ir.ModelError as e:
        raise SystemExit(f"error: {e}") from None


def _input_shape(proto, size: int | None) -> tuple:
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise SystemExit("bench needs a model with exactly one input")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    size = size or (320 if len(dims) == 4 else 16000)
    defaults = ([1, size, size, 3] if _channels_last(proto) else [1, 3, size, size]) if len(dims) == 4 \
        else [1, 1, size]
    return tuple(d if d else defaults[i] for i, d in enumerate(dims))


def _channels_last(proto) -> bool:
    """Whether the model's one input is (N, H, W, C), read only through a Transpose to NCHW (as
    keras2onnx and tf2onnx write it; the session takes such frames as they are)."""
    name = _graph_inputs(proto)[0].name
    users = [n for n in proto.graph.node if name in n.input]
    perm = [list(a.ints) for a in users[0].attribute if a.name == "perm"] if len(users) == 1 else []
    return len(users) == 1 and users[0].op_type == "Transpose" and perm == [[0, 3, 1, 2]]


def _frames(args, proto, shape) -> list:
    """The source's frames at the model's input shape: made channels-first, then transposed for
    a channels-last input."""
    from reuserun.streams import frames_from_spec

    nhwc = len(shape) == 4 and _channels_last(proto)
    nchw = (shape[0], shape[3], shape[1], shape[2]) if nhwc else shape
    frames = frames_from_spec(args.source, nchw, args.frames, seed=args.seed, mean=args.mean, std=args.std)
    return [np.ascontiguousarray(f.transpose(0, 2, 3, 1)) for f in frames] if nhwc else frames


def _workload(args):
    """(model, its name, input shape, frames, threads) for bench and profile: the source
    defaults to synthetic frames, or synthetic audio for a 1-D model."""
    proto, name = _load_proto(args.model, args.size)
    shape = _input_shape(proto, args.size)
    args.source = args.source or ("synthetic" if len(shape) == 4 else "synthetic-audio")
    return proto, name, shape, _frames(args, proto, shape), args.threads or options.usable_cpus()


def cmd_bench(args) -> int:
    from reuserun.bench import format_table, run_bench

    proto, name, _, frames, threads = _workload(args)
    try:
        res = run_bench(proto, frames, policies=args.policy or ["auto", "auto+ort", "dense"], threads=threads,
                        threshold=args.threshold, model_name=name, source_name=args.source,
                        progress=not args.no_progress, tile=args.tile, layer_thresholds=args.thresholds)
    except (ir.ModelError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.to_dict(), f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_serve(args) -> int:
    """N streams of the source (each with its own seed) through a StreamPool."""
    import time

    from tqdm import tqdm

    from reuserun.pool import StreamPool

    proto, name = _load_proto(args.model, args.size)
    shape = _input_shape(proto, args.size)
    args.source = args.source or ("synthetic" if len(shape) == 4 else "synthetic-audio")
    per_stream = []
    for k in range(args.streams):
        args.seed = k
        per_stream.append(_frames(args, proto, shape))
    extra = {} if args.backend == "local" else {"backend": "ray"}
    with StreamPool(proto, workers=args.workers, threads=args.threads, **extra) as pool:
        t0 = time.perf_counter()
        futures = [pool.submit(k, fs[i]) for i in range(args.frames) for k, fs in enumerate(per_stream)]
        for f in tqdm(futures, desc=f"{args.streams} streams", unit="frame", disable=args.no_progress):
            f.result()
        elapsed = time.perf_counter() - t0
        stats = pool.stats()
    print(f"{name}: {args.streams} streams x {args.frames} frames, {len(stats['workers'])} workers x "
          f"{stats['threads_per_worker']} threads ({args.backend}): {len(futures) / elapsed:.1f} frames/s")
    print(f"{'stream':>6} {'frames':>6} {'mac_frac':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for k, st in stats["streams"].items():
        print(f"{k:>6} {st['frames']:>6} {st['mac_fraction']:>8.3f} {st['latency_ms']['p50']:>8.2f} "
              f"{st['latency_ms']['p99']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "frames_per_s": len(futures) / elapsed, **stats}, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


def cmd_info(args) -> int:
    from reuserun.frontend import load_model
    from reuserun.info import describe

    proto, name = _load_proto(args.model, args.size)
    try:
        graph = load_model(proto, {k: v for k, v in [(i.name, _input_shape(proto, args.size))
                                                      for i in _graph_inputs(proto)]})
    except ir.UnsupportedOpsError as e:
        print(f"{name}: NOT supported\n{e}")
        return 1
    except ir.ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{name}: supported")
    print(describe(graph))
    return 0


def cmd_profile(args) -> int:
    import reuserun
    from reuserun import profile

    proto, name, shape, frames, threads = _workload(args)
    sess = reuserun.InferenceSession(proto, policy=args.policy, threads=threads, input_shape=shape, profile=True)
    input_name = sess.get_inputs()[0].name
    for f in frames:
        sess.run(None, {input_name: f})
    report = profile.compare(sess.profile(), profile.ort_node_times(proto.SerializeToString(), input_name,
                                                                     frames, threads),
                             profile.ort_names(proto))
    print(f"{name}, policy {args.policy}, {threads} threads")
    print(profile.format_table(report, args.top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.png:
        profile.plot(report, args.png, args.top)
        print(f"wrote {args.png}")
    return 0


def cmd_tune(args) -> int:
    from reuserun.tune import tune

    proto, name = _load_proto(args.model, args.size)
    frames = _frames(args, proto, _input_shape(proto, args.size))
    from tqdm import tqdm
    bar = tqdm(desc="tune", unit="layer", leave=False, disable=args.no_progress)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    res = tune(proto, frames, args.max_error, threads=args.threads, progress=progress)
    bar.close()
    with open(args.out, "w") as f:
        f.write(res.to_json())
    print(f"{name}: input threshold {res.threshold:.4g}, {sum(1 for v in res.layer_thresholds.values() if v)} "
          f"layer thresholds; worst relative L2 {res.max_rel_l2:.4f} (budget {args.max_error}); "
          f"mac_fraction {res.mac_fraction:.4f} (exact mode {res.exact_mac_fraction:.4f})"
          + (f"; argmax agreement {res.argmax_agreement:.3f}" if res.argmax_agreement is not None else "")
          + (f"; held-out frames (not tuned on): worst relative L2 {res.holdout_rel_l2:.4f}"
             if res.holdout_rel_l2 is not None else ""))
    print(f"wrote {args.out}: load it with InferenceSession(model, layer_thresholds={args.out!r})")
    return 0


def _read_image(path: str, c: int, h: int, w: int) -> np.ndarray:
    """An image file (through Pillow) or a .npy array, as (h, w, c) floats in [0, 1] (.npy values
    are taken as they are)."""
    if path.endswith(".npy"):
        a = np.load(path).astype(np.float32)
        a = a[0] if a.ndim == 4 else a
        a = a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == c and a.shape[-1] != c else a
        a = a[..., None] if a.ndim == 2 else a
        if a.shape != (h, w, c):
            raise SystemExit(f"{path}: array of shape {a.shape}, the model needs {(h, w, c)}")
        return a
    try:
        from PIL import Image
    except ImportError as e:
        raise SystemExit("reading images needs Pillow: pip install pillow (or pass a .npy array)") from e
    try:
        img = Image.open(path).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    except OSError as e:
        raise SystemExit(f"cannot read image {path}: {e}") from None
    a = np.asarray(img, np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def cmd_occlusion(args) -> int:
    import reuserun
    from reuserun.occlusion import occlusion_map, save_overlay

    proto, name = _load_proto(args.model, args.size)
    shape = _input_shape(proto, args.size)
    if len(shape) != 4:
        raise SystemExit("occlusion needs an image model with a (1, C, H, W) input")
    nhwc = _channels_last(proto)
    c, h, w = (shape[3], shape[1], shape[2]) if nhwc else shape[1:]
    hwc = _read_image(args.image, c, h, w)
    x = hwc.transpose(2, 0, 1)[None].copy()
    if args.mean is not None:
        x -= np.asarray(args.mean, np.float32).reshape(1, -1, 1, 1)
    if args.std is not None:
        x /= np.asarray(args.std, np.float32).reshape(1, -1, 1, 1)
    if nhwc:
        x = x.transpose(0, 2, 3, 1)
    sess = reuserun.InferenceSession(proto, threads=args.threads, input_shape=shape)
    try:
        res = occlusion_map(sess, np.ascontiguousarray(x, np.float32), args.patch, args.stride, args.target,
                            args.baseline, progress=not args.no_progress, workers=args.workers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.splitext(os.path.basename(args.image))[0] + "_occlusion"
    np.save(out + ".npy", res["heat"])
    save_overlay(hwc, res["heat"], out + ".png",
                 f"{name}: class {res['target']}, patch {args.patch}, stride {args.stride}")
    print(f"{name}: target {res['target']} (score {res['base_score']:.4g}), {res['windows']} windows, "
          f"mean mac_fraction {res['mac_fraction']:.3f}")
    print(f"wrote {out}.npy and {out}.png")
    return 0


def _graph_inputs(proto):
    init = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in init]


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _number(kind: str, lo: float, open_low: bool = False, integer: bool = False):
    """An argparse type: a finite number >= lo (> lo when open_low), an integer when asked."""
    def parse(text: str):
        try:
            v = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not np.isfinite(v) or v < lo or (open_low and v == lo):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return v
    return parse


_positive_int = _number("an integer >= 1", 1, integer=True)
_threads = _number("an integer >= 0 (0: every core)", 0, integer=True)
_nonnegative = _number("a finite number >= 0", 0.0)
_budget = _number("a finite number > 0", 0.0, open_low=True)


def _writable(path: str) -> str:
    """Checked before minutes of work are spent, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"cannot write {path!r}")
    return path


def _add_preprocessing(p) -> None:
    p.add_argument("--mean", type=_floats, default=None,
                   help="per-channel mean to subtract from [0, 1] frames, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std to divide by")


def _version() -> str:
    """The version, and which build of the kernels runs (ISA level, OpenMP)."""
    import reuserun
    level = reuserun.isa.chosen() or "one -march (REUSERUN_ARCH)"
    return (f"reuserun {reuserun.__version__}; kernels: {level}, "
            f"OpenMP {'on' if reuserun.openmp_enabled() else 'off'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reuserun", description=__doc__)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="measure onnxruntime and reuserun on the same frames")
    b.add_argument("model", nargs="?", help="ONNX file, or builtin:NAME (default: builtin yolo_like)")
    b.add_argument("--source", default=None, help="synthetic[:SCENARIO] | video:PATH | atari:GAME | "
                   "audio:PATH[@HOP] | synthetic-audio[:HOP] (default: synthetic, or synthetic-audio for 1-D models)")
    b.add_argument("--frames", type=_positive_int, default=30)
    b.add_argument("--policy", action="append", choices=POLICY_CHOICES,
                   help="policy to run (repeatable; default: auto, auto+ort and dense)")
    b.add_argument("--threshold", type=_nonnegative, default=0.0)
    b.add_argument("--thresholds", metavar="JSON", help="per-layer thresholds (the file `reuserun tune` writes)")
    b.add_argument("--threads", type=_threads, default=None)
    b.add_argument("--tile", type=_positive_int, default=None)
    b.add_argument("--size", type=_positive_int, default=None,
                   help="input size for built-in models and dynamic dims (default 320 px; 16000 samples for 1-D)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", type=_writable, help="write results as JSON here")
    b.add_argument("--no-progress", action="store_true")
    _add_preprocessing(b)
    b.set_defaults(func=cmd_bench)
    t = sub.add_parser("tune", help="calibrate approximate-mode thresholds on a clip")
    t.add_argument("model", nargs="?")
    t.add_argument("--source", default="synthetic")
    t.add_argument("--frames", type=_positive_int, default=20)
    t.add_argument("--max-error", type=_budget, default=0.01, help="worst relative L2 allowed per frame")
    t.add_argument("--out", type=_writable, default="thresholds.json")
    t.add_argument("--threads", type=_threads, default=None)
    t.add_argument("--size", type=_positive_int, default=320)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    _add_preprocessing(t)
    t.set_defaults(func=cmd_tune)
    pr = sub.add_parser("profile", help="per-step time, MACs and GMAC/s beside onnxruntime's per-node profile")
    pr.add_argument("model", nargs="?", help="ONNX file, or builtin:NAME (default: builtin yolo_like)")
    pr.add_argument("--source", default=None, help="as for bench (default: synthetic)")
    pr.add_argument("--frames", type=_positive_int, default=10)
    pr.add_argument("--policy", choices=[p for p in POLICY_CHOICES if p != "auto+ort"], default="auto")
    pr.add_argument("--threads", type=_threads, default=None)
    pr.add_argument("--size", type=_positive_int, default=None)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--top", type=_positive_int, default=25, help="steps to list (by time)")
    pr.add_argument("--json", type=_writable, help="write every step's row as JSON here")
    pr.add_argument("--png", type=_writable, help="plot the top steps against onnxruntime's here")
    _add_preprocessing(pr)
    pr.set_defaults(func=cmd_profile)

    sv = sub.add_parser("serve", help="many streams of a source through a pool of workers")
    sv.add_argument("model", nargs="?", help="ONNX file, or builtin:NAME (default: builtin yolo_like)")
    sv.add_argument("--streams", type=_positive_int, default=4)
    sv.add_argument("--frames", type=_positive_int, default=30, help="frames per stream")
    sv.add_argument("--source", default=None, help="as for bench; each stream gets its own seed")
    sv.add_argument("--backend", choices=["local", "ray"], default="local")
    sv.add_argument("--workers", type=_positive_int, default=None, help="default: the usable CPUs")
    sv.add_argument("--threads", type=_threads, default=None, help="kernel threads per worker")
    sv.add_argument("--size", type=_positive_int, default=None)
    sv.add_argument("--json", type=_writable, help="write the pool's stats as JSON here")
    sv.add_argument("--no-progress", action="store_true")
    _add_preprocessing(sv)
    sv.set_defaults(func=cmd_serve, seed=0)

    i = sub.add_parser("info", help="ops, shapes, MACs and receptive fields of a model")
    i.add_argument("model", nargs="?")
    i.add_argument("--size", type=_positive_int, default=320)
    i.set_defaults(func=cmd_info)
    o = sub.add_parser("occlusion", help="occlusion sensitivity map of an image, as PNG and .npy")
    o.add_argument("model", help="ONNX file or builtin:NAME")
    o.add_argument("image", help="image file (PNG, JPEG, ...) or .npy array")
    o.add_argument("--patch", type=_positive_int, default=16)
    o.add_argument("--stride", type=_positive_int, default=8)
    o.add_argument("--target", type=int, default=None, help="output index to explain (default: the top one)")
    o.add_argument("--baseline", type=_number("a finite number", -np.inf, open_low=True), default=0.0,
                   help="value occluded pixels take")
    o.add_argument("--size", type=_positive_int, default=224, help="input size for built-in models and dynamic dims")
    o.add_argument("--threads", type=_threads, default=None)
    o.add_argument("--workers", type=_positive_int, default=None,
                   help="windows run on this many session forks at once (default: one per thread)")
    o.add_argument("--out", default=None, help="output prefix (default: IMAGE_occlusion)")
    o.add_argument("--no-progress", action="store_true")
    _add_preprocessing(o)
    o.set_defaults(func=cmd_occlusion)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ir.ModelError, ValueError, OSError, RuntimeError) as e:
        # what a user can act on, in one line; a bug still shows its traceback
        print(f"reuserun {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
