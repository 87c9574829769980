"""InferenceSession: onnxruntime's surface over a cache of every layer's last activations."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from reuserun import ir
from reuserun.frontend import load_model, precision
from reuserun.frontend.loader import _parse, declared_dims
from reuserun.ir import InputError, ModelError, NotNative
from reuserun.kernels import driver, marks, region
from reuserun.kernels.journal import Journal
from reuserun.plan.policies import make_policy
from reuserun.runtime import options, ort_api, variants
from reuserun.runtime.compiler import Compiler, frame_stack_inputs
from reuserun.runtime.dense_choice import DenseChoice
from reuserun.runtime.frame_stats import FrameStats
from reuserun.runtime.fuse import fuse
from reuserun.runtime.profiler import StepProfiler
from reuserun.runtime.shifter import ShiftDetector, Shifter
from reuserun.runtime.storage import aligned_zeros

# spare room behind each cache, as a fraction of it, for sessions that may reuse shifted frames:
# a shift then slides the caches' origins, and copies them once per SHIFT_SLACK * size / shift
SHIFT_SLACK = 0.25

# dense_backend="onnxruntime": a frame whose change covers at least this fraction of its input
# pixels reaches (almost) every position of a CNN, so reuse cannot save anything
DELEGATE_ABOVE = 0.5
# ... and once a frame's change reached this fraction of the dense MACs, frames that change at
# least half as much go to onnxruntime too (its dense kernels beat reuserun's partial update
# there: on MobileNetV3 a 1% object reaches 77% of the MACs)
HEAVY_MACS = 0.75
# shares of an input's positions, as divisors of its position count: a frame that changed on more
# than npix // SHIFT_SEARCH_PART positions may be a shift, and is searched for one; the last move
# still holds while it leaves under npix // STEADY_SHIFT_PART changed; an exact frame that changed
# on more than npix // COPY_WHOLE_PART is copied into its cache whole
SHIFT_SEARCH_PART = 4
STEADY_SHIFT_PART = 8
COPY_WHOLE_PART = 4
DENSE_BACKENDS = ("reuserun", "onnxruntime")
BATCH_MODES = ("dense", "streams")


def _check_feed_names(feed: dict, expected) -> None:
    unknown = sorted(set(feed) - expected)
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {sorted(expected)}")
    missing = sorted(expected - set(feed))
    if missing:
        raise InputError(f"missing input {missing[0]!r}; the model's inputs are {sorted(expected)}")


def _non_finite(name: str) -> InputError:
    return InputError(f"input {name!r} contains NaN or Inf; the frame was rejected and the session's "
                      f"state is unchanged (accept_nan=True takes such frames)")


def _check_array(name: str, v, shape: tuple) -> None:
    if not isinstance(v, np.ndarray):
        raise InputError(f"input {name!r} must be a numpy array, not {type(v).__name__}")
    if v.dtype != np.float32:
        raise InputError(f"input {name!r}: expected tensor(float) (float32), got {v.dtype}")
    if v.shape != shape:
        raise InputError(f"input {name!r}: expected shape {shape}, got {v.shape}; a session "
                         f"keeps one stream of one shape (make a new session for another)")


@dataclass(frozen=True)
class NodeArg:
    """What onnxruntime's get_inputs() / get_outputs() return: name, shape and type."""
    name: str
    shape: list
    type: str = "tensor(float)"


class CompiledModel:
    """The IR after fusion plus packed weights; shared by all sessions of one model and shape."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.packed: dict = {}


_MODELS: weakref.WeakValueDictionary[tuple, CompiledModel] = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def _compiled(proto, digest: str, input_shapes: dict, strict: bool) -> CompiledModel:
    key = (digest, tuple(sorted((k, tuple(v)) for k, v in input_shapes.items())), strict)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = CompiledModel(fuse(load_model(proto, input_shapes, strict)))
            _MODELS[key] = model
    return model


def _slide_window(pair: list, slack: int, n: int, d: int):
    """Moves the n-float window of pair = [flat buffer, start] by d floats (new[i] = old[i + d],
    marks.slide); returns the window's new view when its start changed, else None."""
    start = marks.slide(pair[0], pair[1], slack, n, d)
    if start == pair[1]:
        return None
    pair[1] = start
    return pair[0][start:start + n]


def _read_thresholds(spec) -> tuple[dict, float | None]:
    """({layer: threshold}, input threshold or None) from a dict or a JSON file; `reuserun tune`
    writes {"threshold": T, "layer_thresholds": {...}}, a plain {layer: T} works too."""
    if spec is None:
        return {}, None
    if isinstance(spec, (str, os.PathLike)):
        try:
            with open(spec) as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:  # missing, unreadable, not JSON
            raise ValueError(f"layer_thresholds: cannot read {os.fspath(spec)!r}: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"layer_thresholds must be a dict or a JSON file holding an object, "
                         f"got {type(spec).__name__}")
    input_thr = None
    if "layer_thresholds" in spec:
        input_thr = options.threshold("the thresholds file's threshold", spec.get("threshold", 0.0))
        spec = spec["layer_thresholds"]
        if not isinstance(spec, dict):
            raise ValueError("layer_thresholds: its 'layer_thresholds' entry must be an object {layer: T}")
    table = {str(k): options.threshold(f"layer threshold {k!r}", v) for k, v in spec.items()}
    return table, input_thr


def _dims(value_info) -> list | None:
    """onnxruntime's NodeArg.shape: ints, names of dynamic dims (None when unnamed); None for
    a tensor declared without a shape."""
    dims = declared_dims(value_info.type.tensor_type)
    return None if dims is None else [None if d == "?" else d for d in dims]


def _check_memory(graph: ir.Graph) -> None:
    """Refuse a model whose caches alone exceed the machine's memory: allocating them would
    end in the kernel's out-of-memory killer rather than in an error."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    sizes = {n: 4 * int(np.prod(t.shape)) for n, t in graph.tensors.items()
             if not t.is_const and t.shape is not None}
    if sizes and sum(sizes.values()) > physical:
        big = max(sizes, key=sizes.get)
        raise ModelError(f"this model's activations take {sum(sizes.values()) / 2**30:.1f} GiB at this input "
                         f"size, more than this machine's {physical / 2**30:.1f} GiB (the largest, "
                         f"{big!r} of shape {graph.tensors[big].shape}, {sizes[big] / 2**30:.1f} GiB)")


class InferenceSession:
    """Run an ONNX CNN on a stream of frames, recomputing only what each frame's change reaches.

    The first four arguments are onnxruntime's: the model (a path or bytes), a SessionOptions
    (intra_op_num_threads sets the threads; enable_profiling writes onnxruntime's trace file on
    end_profiling(); graph_optimization_level applies to the embedded onnxruntime session), and
    providers with their options (reuserun runs on the CPU; any other provider is named in a
    warning). reuserun's own options follow by name:

    policy:    "auto" (default), "tiles", "rects", "rect" or "dense" (the reference).
    threshold: input change threshold; 0 means any bit counts (exact mode).
    threads:   kernel threads (default: all cores).
    tile:      tile size for "tiles" / "rects".
    input_shape: binds dynamic input dims, a tuple (single input) or {name: tuple};
               otherwise the first frame binds them.
    layer_thresholds: per-layer truncation thresholds, a dict or a JSON file {layer: T, "default":
               T}; layers are IR node or output tensor names (`reuserun info` lists them). A
               recomputed value that moved by no more than its layer's T keeps its reference and
               does not propagate. Default 0: exact.
    frame_stack: an input whose channels are the last frames of a stream (DQN-style stacks):
               its first conv keeps one partial per channel, so a frame's change is computed for
               one channel, not the whole stack. None: as the model's metadata
               "reuserun.frame_stack" says (off when absent).
    shift:     exact shift reuse (default on): when most of a frame changed, check whether it is
               the reference translated (scrolling, panning, a sliding window over a stream);
               if so, move every cache whose stride divides the shift and compute only the
               exposed band, the borders and what else changed. Exact mode only.
    dense_backend: who computes a frame that changed on at least half of its input pixels (and
               is not a shift): "reuserun" (default) or "onnxruntime", an embedded session
               with the same thread count, at its speed. With "onnxruntime", once a frame's
               change reached 3/4 of the dense MACs, later frames that change at least half as
               much go there too. The cache then falls behind; the next frame that changes
               less is first computed densely by reuserun, which brings it back. Delegated
               frames' outputs are onnxruntime's (within float tolerance of reuserun's dense
               run, not bit-identical to it); every other frame is unchanged.
               stats["backend"] says which one ran the last frame.
    profile:   keep a per-step profile of the frames reuserun computes (profile() reads it).
               On with sess_options.enable_profiling too.
    batch:     an input holding a batch of several frames: "dense" (default) runs the model whole
               in onnxruntime; "streams" makes each batch index a stream of its own, with its own
               caches (N cameras in one array; the model must keep the batch on axis 0).
    accept_nan: take frames holding NaN or Inf (refused by default, as they usually mean a broken
               source): each non-finite position counts as changed on every frame it is, or was,
               non-finite, and the network computes with it as onnxruntime would.
    strict:    refuse a model with nodes reuserun has no kernel for. By default those run in
               embedded onnxruntime sessions over their own subgraphs (whole tensors, when an
               input changed); `reuserun info` marks them.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, *,
                 policy: str = "auto", threshold: float = 0.0, threads: int | None = None,
                 tile: int | None = None, input_shape=None, frame_stack: bool | None = None,
                 layer_thresholds=None, shift: bool = True, dense_backend: str = "reuserun",
                 profile: bool = False, strict: bool = False, batch: str = "dense", accept_nan: bool = False):
        if dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend must be one of {DENSE_BACKENDS}, got {dense_backend!r}")
        self.dense_backend = dense_backend
        self._ort = None  # the embedded onnxruntime session, made when the shapes are bound
        self._settings = ort_api.read_session_options(sess_options)
        self._providers = ort_api.read_providers(providers, provider_options)
        if threads is not None and self._settings.threads is not None and threads != self._settings.threads:
            raise ValueError(f"threads={threads!r} disagrees with sess_options.intra_op_num_threads="
                             f"{self._settings.threads}; give one of them")
        self.strict = options.flag("strict", strict)
        self.accept_nan = options.flag("accept_nan", accept_nan)
        if batch not in BATCH_MODES:
            raise ValueError(f"batch must be one of {BATCH_MODES}, got {batch!r}")
        self.batch = batch
        self._streams = None  # batch="streams" with a batch of several: one session per index
        self._options = dict(policy=policy, threshold=threshold, tile=tile, frame_stack=frame_stack,
                             layer_thresholds=layer_thresholds, shift=shift, dense_backend=dense_backend,
                             profile=profile, strict=strict, accept_nan=accept_nan)
        self._proto = _parse(path_or_bytes)
        # a float16 model computes in float32: its frames are cast on the way in and its
        # outputs on the way out
        self._half = precision.uses_float16(self._proto)
        self._native_proto = precision.to_float32(self._proto) if self._half else self._proto
        self._io_type = "tensor(float16)" if self._half else "tensor(float)"
        self._digest = hashlib.sha1(self._native_proto.SerializeToString()).hexdigest()
        init = {i.name for i in self._proto.graph.initializer}
        self._input_args = [NodeArg(i.name, _dims(i), self._io_type) for i in self._proto.graph.input
                            if i.name not in init]
        self._output_args = [NodeArg(o.name, _dims(o), self._io_type) for o in self._proto.graph.output]
        threshold = options.threshold("threshold", threshold)
        self.frame_stack = options.optional_flag("frame_stack", frame_stack)
        self.shift = options.flag("shift", shift)
        self._trace = None
        if self._settings.profile_prefix is not None:  # onnxruntime's profiling, to a trace file
            self._trace = ort_api.ProfileTrace(self._settings.profile_prefix)
            weakref.finalize(self, self._trace.write)
        self._profiling = options.flag("profile", profile) or self._trace is not None
        self._profiler = None
        self.layer_thresholds, file_threshold = _read_thresholds(layer_thresholds)
        if file_threshold is not None and threshold == 0.0:
            threshold = file_threshold  # a tuned file carries its input threshold too
        self.policy_name = policy
        self._policy = make_policy(policy, options.tile(tile))
        self.threshold = threshold
        self.threads = options.threads(self._settings.threads if threads is None else threads)
        self._program = None
        self._whole = None  # the embedded onnxruntime session running a model reuserun cannot
        self._frame_stats = FrameStats()
        self._lock = threading.RLock()  # one frame or variant at a time per session
        self._version = 0  # counts frames that changed the cache, so forks know when they are stale
        self._forks: tuple = (None, [])
        if input_shape is not None:
            if not isinstance(input_shape, dict):
                if len(self._input_args) != 1:
                    raise ValueError("input_shape must be a dict {name: shape} for a model with several inputs")
                input_shape = {self._input_args[0].name: input_shape}
            self._compile({k: options.shape(f"input_shape[{k!r}]", v) for k, v in input_shape.items()})
        elif all(a.shape is not None and all(isinstance(d, int) and d > 0 for d in a.shape)
                 for a in self._input_args):
            self._compile({a.name: tuple(a.shape) for a in self._input_args})

    # --- onnxruntime surface ------------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        if self._whole is not None:
            return self._whole.get_inputs()
        if self._program is None:
            return list(self._input_args)
        return [NodeArg(a.name, list(self._input_shapes[a.name]), self._io_type) for a in self._input_args]

    def get_outputs(self) -> list[NodeArg]:
        if self._whole is not None:
            return self._whole.get_outputs()
        if self._program is None:
            return list(self._output_args)
        return [NodeArg(o, list(self._graph.tensors[o].shape), self._io_type) for o in self._graph.outputs]

    def memory(self) -> dict:
        """Bytes this session holds: cached activations (what the brief bounds by 2x the model's
        intermediate activations), masks and scratch, output mirrors, and the shared weights."""
        if self._program is None:
            return {}
        seen, cache, masks = set(), 0, 0
        for st in self._storage.values():
            arr = getattr(st, "buf", None) if st.kind == "spatial" else getattr(st, "arr", None)
            if st.kind == "const" or arr is None:
                continue
            base = arr.base if arr.base is not None else arr
            if id(base) not in seen:
                seen.add(id(base))
                cache += base.nbytes
            if st.kind == "spatial":
                masks += st.mask.nbytes
        scratch = sum(a.nbytes for step in self._program
                      for a in (getattr(step, k, None)
                                for k in ("reach_mask", "compute_mask", "pix", "full_pix", "tmp"))
                      if isinstance(a, np.ndarray))
        inputs = set(self._graph.inputs)
        activations = sum(4 * int(np.prod(t.shape)) for n, t in self._graph.tensors.items()
                          if not t.is_const and n not in inputs)
        weights = sum(sum(a.nbytes for a in (v if isinstance(v, tuple) else (v,)) if isinstance(a, np.ndarray))
                      for v in self._model.packed.values())
        return {"cache": cache, "masks": masks, "scratch": scratch,
                "mirrors": sum(buf.nbytes for buf, _ in self._mirror_bufs.values()),
                "activations": activations, "weights": weights}

    @property
    def channels_last_inputs(self) -> frozenset:
        """Inputs the model takes as (N, H, W, C) through a leading Transpose, which reuserun
        applies to each frame as it arrives (empty until the shapes are bound)."""
        return frozenset() if self._program is None else self._channels_last

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_provider_options(self) -> dict:
        return {p: {} for p in self._providers}

    def set_providers(self, providers=None, provider_options=None) -> None:
        self._providers = ort_api.read_providers(providers, provider_options)

    def disable_fallback(self) -> None:
        """onnxruntime's switch for falling back to the CPU; reuserun always runs there."""

    def enable_fallback(self) -> None:
        """onnxruntime's switch for falling back to the CPU; reuserun always runs there."""

    def get_session_options(self):
        return ort_api.session_options_for(self._settings, self.threads)

    def get_modelmeta(self) -> ort_api.ModelMetadata:
        return ort_api.model_metadata(self._proto)

    def get_overridable_initializers(self) -> list[NodeArg]:
        """Initializers the model also lists as inputs; reuserun keeps them constant."""
        inputs = {i.name: i for i in self._proto.graph.input}
        return [NodeArg(t.name, list(t.dims)) for t in self._proto.graph.initializer if t.name in inputs]

    def end_profiling(self) -> str:
        """Writes the trace of the frames so far (sess_options.enable_profiling) and returns its
        path; "" when profiling is off, as in onnxruntime."""
        return "" if self._trace is None else self._trace.write()

    def get_profiling_start_time_ns(self) -> int:
        return 0 if self._trace is None else self._trace.start_ns

    def io_binding(self) -> ort_api.IOBinding:
        return ort_api.IOBinding()

    def run_with_iobinding(self, iobinding: ort_api.IOBinding, run_options=None) -> None:
        """Runs the bound inputs; outputs land in their bound buffers (iobinding reads them back)."""
        names, buffers = iobinding.bound_outputs()
        iobinding.results = self._run_into(names, iobinding.bound_inputs(), run_options, buffers)

    def run_with_ort_values(self, output_names, input_dict_ort_values: dict, run_options=None) -> list:
        return [ort_api.owned_ortvalue(a) for a in self.run(output_names, input_dict_ort_values, run_options)]

    def reset(self) -> None:
        """Forget the cached state: the next frame is computed in full."""
        self._fresh = True
        self._heavy_from = None  # a new scene: its changes are measured afresh
        if self._program is not None:
            self._dense_choice.reset()
        for det in getattr(self, "_detectors", {}).values():
            det.reset()

    @property
    def stats(self) -> dict:
        """Figures about the last run: mac_fraction, changed_fraction, time_s, per-layer counts."""
        return self._frame_stats.stats

    @property
    def lock(self) -> threading.RLock:
        """Held while a frame or a variant runs: one at a time per session."""
        return self._lock

    @property
    def last_counts(self) -> list:
        """Positions each step of the program computed in the last run."""
        return self._frame_stats.last_counts

    def state(self) -> dict:
        """A read-only look at what the session keeps between frames, for debugging and for
        proving that a frame changed nothing: "tensors" {name: NCHW view of its cache, or its
        array}, "masks" {name: per-position changed marks of the last run}, "references"
        {input name: the reference frame, NCHW}, and "fresh" (the next frame is computed whole).
        Empty before the shapes are bound."""
        if self._program is None:
            return {"tensors": {}, "masks": {}, "references": {}, "fresh": True}

        def frozen(a):
            v = a.view()
            v.flags.writeable = False
            return v

        tensors, masks = {}, {}
        for name, st in self._storage.items():
            if st.kind == "spatial":
                tensors[name], masks[name] = st.logical(), frozen(st.mask)
            elif st.kind == "plain":
                tensors[name] = frozen(st.arr)
        refs = {n: frozen(r.reshape(self._graph.tensors[n].shape)) for n, r in self._ref_frames.items()}
        return {"tensors": tensors, "masks": masks, "references": refs, "fresh": self._fresh}

    def mac_fractions(self, counts: np.ndarray) -> np.ndarray:
        """stats["mac_fraction"] of many runs at once (an occlusion map's windows): counts
        (runs, steps) of positions computed, as last_counts gives them."""
        return self._frame_stats.mac_fractions(counts)

    def run(self, output_names, input_feed: dict, run_options=None) -> list[np.ndarray]:
        """onnxruntime's run: the outputs named (None or []: all) for this frame. input_feed maps
        every input's name to a float32 numpy array (or OrtValue); run_options is an
        onnxruntime.RunOptions (terminate refuses the run; logid tags its profile event)."""
        return self._run_into(output_names, input_feed, run_options, None)

    def _run_into(self, output_names, input_feed: dict, run_options, into) -> list[np.ndarray]:
        """run(), writing each output into into[i] where that is an array (IOBinding's buffers)."""
        if not self._half:
            return self._run_frame(output_names, input_feed, run_options, into)
        # bound float16 buffers take the float32 outputs as they are copied in
        outs = self._run_frame(output_names, precision.feed_as_float32(input_feed), run_options, into)
        return precision.outputs_as_float16(outs)

    def _run_frame(self, output_names, input_feed: dict, run_options, into) -> list[np.ndarray]:
        tag = ort_api.check_run_options(run_options)
        input_feed = ort_api.plain_feed(input_feed)
        with self._lock:
            if self._streams is not None:
                t0 = time.perf_counter()
                outs = self._streams.run(output_names, input_feed)
                self._frame_stats.replace(dict(self._streams.stats, time_s=time.perf_counter() - t0))
                return self._traced(outs, into, t0, tag)
            binds = self._program is None and self._whole is None
            if binds:
                if self._declares_non_float():
                    self._run_whole_in_onnxruntime("its inputs are not all float32")
                else:
                    self._compile(self._shapes_from_feed(input_feed))
            if self._whole is not None:
                t0 = time.perf_counter()
                return self._traced(self._run_whole(output_names, input_feed), into, t0, tag)
            if self._streams is not None:  # the first frame made the streams: run it there
                return self._run_frame(output_names, input_feed, run_options, into)
            try:
                names = self._output_names if not output_names else self._check_output_names(output_names)
                if into is not None:
                    self._check_bound_outputs(names, into)
                t0 = time.perf_counter()
                frames, diffs = self._validate(input_feed)
            except BaseException:
                if binds:  # a rejected first frame binds no dims
                    self._program = None
                raise
            if self.dense_backend == "onnxruntime" and self._delegates(diffs):
                return self._traced(self._run_delegated(names, frames, diffs, t0), into, t0, tag)
            changed = self._frame_stats.changed_fraction(diffs) if diffs else 0.0
            heavy = self._moved is None and (self._all_changed(diffs) or self._chooses_dense(changed))
            # a run of heavy frames: all but the first run without the caches (a lone one, a scene
            # cut, keeps them, so the frames after it run incrementally)
            after_heavy, self._last_heavy = self._last_heavy, heavy
            if heavy and after_heavy and self._scratch_ok and not self._fresh:
                return self._traced(self._run_scratch(names, frames, diffs, changed, t0), into, t0, tag)
            full = self._fresh or self._behind or self.policy_name == "dense" or heavy
            moved = None if full else self._moved  # (input, shift) when the frame is a shift
            try:
                if not self._load_inputs(frames, diffs, full):
                    computed = self._still  # every cache is current
                else:
                    self._version += 1  # forks made for variants are stale from here on
                    if moved:
                        computed = self._propagate_shifted(*moved, frames[moved[0]])
                        self._update_mirrors(False)
                    else:
                        computed = self._propagate(full)
                        self._update_mirrors(full)
            except BaseException:
                self._fresh = True  # a half-updated cache is never reused
                self._version += 1
                raise
            self._fresh = self._behind = False
            outs = [self._output(n, into[i] if into is not None else None) for i, n in enumerate(names)]
            self._frame_stats.record(computed, diffs, full, time.perf_counter() - t0, moved[1] if moved else None)
            if self._profiler is not None:
                self._profiler.frame(time.perf_counter() - t0)
            if self._trace is not None:
                self._traced(outs, None, t0, tag)
            if self.dense_backend == "onnxruntime":
                self._note_weight(computed, full)
            elif diffs and moved is None and computed is not self._still:
                fraction = 1.0 if full else self._frame_stats.macs(computed) / max(1, self._frame_stats.dense_macs)
                self._dense_choice.note(changed, time.perf_counter() - t0, full, fraction)
            return outs

    # --- models reuserun's kernels cannot run -------------------------------------------------
    def _single_stream(self, input_shapes: dict) -> InferenceSession:
        """One batch index's session: these options, bound at batch 1."""
        return InferenceSession(self._proto, self._settings.sess_options, threads=self.threads,
                                input_shape=input_shapes, **self._options)

    def _validate_only(self, feed: dict) -> None:
        """The checks a frame must pass, touching nothing (a batch is refused whole)."""
        if self._program is None:
            return
        _check_feed_names(feed, self._feed_names)
        for name, shape, _ in self._input_specs:
            _check_array(name, feed[name], shape)
            if not self.accept_nan and not np.isfinite(feed[name]).all():
                raise _non_finite(name)

    def _check_cached(self) -> None:
        if self._whole is not None:
            raise InputError(f"variants need reuserun's caches, and this model runs whole in onnxruntime "
                             f"({self.whole_model_reason})")

    def _declares_non_float(self) -> bool:
        init = {i.name for i in self._native_proto.graph.initializer}
        return any(i.type.tensor_type.elem_type != 1 for i in self._native_proto.graph.input if i.name not in init)

    def _run_whole_in_onnxruntime(self, why: str) -> None:
        import warnings

        from reuserun.runtime.ort_backend import ort_session
        try:
            self._whole = ort_session(self._native_proto.SerializeToString(), self.threads,
                                      self._settings.optimization_level)
        except Exception as e:  # onnxruntime cannot either: the model's own error, on one line
            raise ModelError(f"reuserun cannot run this model ({why}), and onnxruntime cannot either: "
                             + " ".join(str(e).split())) from None
        self.whole_model_reason = why
        warnings.warn(f"reuserun runs this model whole in onnxruntime, every frame dense: {why} "
                      f"(strict=True refuses it instead)", stacklevel=4)

    def _run_whole(self, output_names, feed: dict) -> list[np.ndarray]:
        t0 = time.perf_counter()
        names = None if not output_names else list(output_names)
        try:
            outs = self._whole.run(names, feed)
        except Exception as e:  # onnxruntime's refusal of a feed, as reuserun's
            raise InputError(" ".join(str(e).split())) from None
        self._frame_stats.replace({"mac_fraction": 1.0, "changed_fraction": 1.0, "full": True, "shift": None,
                                   "backend": "onnxruntime", "time_s": time.perf_counter() - t0, "layers": [],
                                   "whole_model": self.whole_model_reason})
        return outs

    def _check_bound_outputs(self, names, into) -> None:
        dtype = np.float16 if self._half else np.float32
        for name, buf in zip(names, into):
            want = tuple(self._graph.tensors[name].shape)
            if buf is not None and (buf.shape != want or buf.dtype != dtype):
                raise InputError(f"output {name!r} is bound to a {buf.dtype} buffer of shape {buf.shape}; "
                                 f"it needs {np.dtype(dtype)} of shape {want}")

    def _traced(self, outs: list, into, t0: float, tag: str) -> list[np.ndarray]:
        """A frame's outputs, copied into bound buffers where there are any, and its profile event."""
        if into is not None:
            for i, buf in enumerate(into):
                if buf is not None:
                    np.copyto(buf, outs[i])
                    outs[i] = buf
        if self._trace is not None:
            backend = self.stats["backend"]
            self._trace.add("Session", "model_run", t0, time.perf_counter(),
                            {"backend": backend, "run_tag": tag} if tag else {"backend": backend})
        return outs

    # --- dense frames without the caches ---------------------------------------------------------
    def _run_scratch(self, names, frames, diffs, changed, t0) -> list[np.ndarray]:
        """A frame that changed so much that it runs densely, after another such frame: through
        the scratch program, the same kernels on buffers shared between tensors once dead
        (Compiler(reuse=True)), so it touches a fraction of the memory that writing every cache
        would; the same bits as a dense run. The frame becomes the reference the next one is
        diffed against, and the caches stay as they were, behind it: the next frame that changes
        less is first computed densely with them (as after a frame handed to onnxruntime)."""
        first = self._scratch is None
        if first:  # compiled when first needed: most sessions never need it
            self._scratch = Compiler(self._graph, self._model.packed, reuse=True).build()
        steps, storage = self._scratch
        self._behind = True  # from the first reference written on, whatever happens next
        self._version += 1
        try:
            for name, v in frames.items():
                st = storage[name]
                if st.kind == "spatial":
                    st.load(v, self.threads)
                    np.copyto(self._ref_frames[name], v.reshape(st.C, -1))
                else:
                    st.store(v, track=False)
                    self._storage[name].store(v, track=False)
            driver.run_full(steps, self._policy, self.threads)
        except BaseException:
            self._fresh = True  # the references may be half written: start over
            raise
        outs = []
        for name in names:
            st = storage[name]
            if st.kind == "spatial":
                out = np.empty(self._graph.tensors[name].shape, np.float32)
                region.to_channels_first(st.buf, st.off, st.C, None, out.reshape(st.C, -1), self.threads)
            else:
                out = np.array(st.logical(), dtype=np.float32, copy=True, order="C")
            outs.append(out)
        elapsed = time.perf_counter() - t0
        self._frame_stats.record([getattr(step, "npix", 1) for step in self._program], diffs, True, elapsed)
        if not first:  # that frame's time is mostly compiling
            self._dense_choice.note(changed, elapsed, True)
        return outs

    # --- variants: what-if runs against the cached reference -----------------------------------
    def run_variant(self, output_names, input_feed: dict, changed=None) -> list[np.ndarray]:
        """Outputs for a variant of the reference (the last frame given to run()), leaving the
        session's cache exactly as it was: the variant is computed incrementally, then every value
        it overwrote is restored. Bit-identical to a dense run on the variant.

        changed: the positions the caller edited, when known, so no diffing is done: an (H, W)
        boolean mask or a list of (y0, y1, x0, x1) boxes (a dict {input name: ...} for several
        inputs). Only those positions are read from the frame (and checked for NaN and Inf); the
        rest come from the reference.
        Thread-safe; variants of one session run one at a time (fork() one per worker to run them
        in parallel, or use run_variants(..., workers=k))."""
        if not isinstance(input_feed, dict):
            raise InputError("input_feed must be a dict {input name: numpy array}")
        self._check_cached()
        if (isinstance(changed, (list, tuple)) and self._program is not None and len(self._input_specs) == 1
                and input_feed.keys() == self._feed_names):
            # declared boxes of a well-formed frame: the native loop, where the model allows it
            name, shape, st = self._input_specs[0]
            v = input_feed[name]
            if st.kind == "spatial" and type(v) is np.ndarray and v.dtype == np.float32 and v.shape == shape \
                    and not self._fresh:
                got = self.declared_batch(output_names, [changed], v)
                if got is not None:
                    return got[0]
        with self._lock:
            if self._program is None or self._fresh:
                raise InputError("run_variant compares against a reference: run() the reference frame first")
            names = self._output_names if output_names is None else self._check_output_names(output_names)
            t0 = time.perf_counter()
            frames, diffs = self._validate(input_feed, incremental=True, declared=self._declared(changed))
            if self._behind:
                self._catch_up()
            journal = self._journal
            slow = self._slow_steps()  # the compiled steps get the journal from the driver
            try:
                for step in slow:
                    step.journal = journal
                self._load_variant(frames, diffs, journal)
                computed = self._propagate(False, journal)
                outs = [np.array(self._storage[n].logical(), dtype=np.float32, copy=True, order="C")
                        for n in names]
            finally:
                for step in slow:
                    step.journal = None
                journal.restore()
            self._frame_stats.record(computed, diffs, False, time.perf_counter() - t0)
            return outs

    def run_variants(self, output_names, input_feed: dict, changed=None, workers: int = 1,
                     progress=None) -> list[np.ndarray]:
        """run_variant over a batch: every input holds B variants along axis 0, changed is None
        or a list of B declarations. Returns each output with the B results along axis 0.
        workers > 1 shares the batch between this session and workers - 1 forks of it, in
        parallel threads (compiled steps run without the GIL), each with its share of the
        threads; progress(done, total) is called after each variant."""
        return variants.run_batch(self, output_names, input_feed, changed, workers, progress)

    def declared_batch(self, names, boxes: list, frames=None, fill: float = 0.0, first: int = 0):
        """Variants whose edits are declared boxes, run in one native loop (driver.DeclaredRunner)
        with no Python between them, or None where this session cannot: every step must have a
        native path, with no per-channel vector inputs, the model one spatial input (no plane
        masks) and the outputs plain tensors. boxes: per variant, a list of (y0, y1, x0, x1);
        frames: (B, C, H, W), the variants (read at their boxes), or None: every declared value
        is fill; first: the batch's first variant's number in the caller's (for errors).
        Returns (outputs, each (B, ...); per variant and step, the positions computed)."""
        self._check_cached()
        if self._program is None or self._fresh:
            raise InputError("variants compare against a reference: run() the reference frame first")
        names = self._output_names if names is None else self._check_output_names(names)
        runner = self._runners.get(tuple(names), False)
        if runner is False:
            runner = self._runners[tuple(names)] = self._declared_runner(names)
        if runner is None:
            return None
        name, x = next(iter(self._spatial_inputs.items()))
        B = len(boxes)
        flat, starts = [], [0]
        for spec in boxes:
            flat += variants.box_list(name, spec, x.H, x.W)
            starts.append(len(flat))
        if frames is not None:
            if not isinstance(frames, np.ndarray) or frames.shape != (B, *self._input_shapes[name][1:]):
                raise InputError(f"variants of {name!r} must be an array of shape "
                                 f"{(B, *self._input_shapes[name][1:])}, got {np.shape(frames)}")
            frames = np.ascontiguousarray(frames, np.float32).reshape(B, x.C, x.npix)
        results = [np.empty((B, *self._storage[n].shape[1:]), np.float32) for n in names]
        counts = np.zeros((B, len(self._program)), np.int64)
        t0 = time.perf_counter()
        with self._lock:
            if self._behind:
                self._catch_up()
            bad = runner.run(self.threads, np.array(flat, np.int32).reshape(-1, 4), np.array(starts, np.int64),
                             frames, fill, [r.reshape(B, -1) for r in results], counts)
        if bad >= 0:
            raise InputError(f"variant {first + bad} holds NaN or Inf in its declared boxes; the batch was rejected")
        if B:
            self._frame_stats.record(counts[-1].tolist(), {name: (None, runner.marked, None)}, False,
                               (time.perf_counter() - t0) / B)
        return results, counts

    def _declared_runner(self, names):
        """The native loop over declared variants for these outputs, or None (_declared_batch)."""
        fast = self._fast_steps()
        if (len(self._input_specs) != 1 or len(self._spatial_inputs) != 1 or self._plane_masks or self._channels_last
                or any(f is None or getattr(step, "vector_inputs", None) for f, step in zip(fast, self._program))
                or any(self._storage[n].kind != "plain" or self._storage[n].arr.dtype != np.float32 for n in names)):
            return None
        name, x = next(iter(self._spatial_inputs.items()))
        # its own mask (the per-run masks swap with the input's); the pixel list is run_variant's,
        # both used under the session's lock
        return driver.DeclaredRunner(fast, [step.thr for step in self._program], x, self._journal,
                                     np.zeros(x.npix, np.uint8), self._variant_pix[name],
                                     [self._storage[n].arr.reshape(-1) for n in names])

    def fork(self) -> InferenceSession:
        """A session sharing this one's weights, with its own copy of the cache: what it runs
        next is incremental against this session's reference."""
        with self._lock:
            twin = InferenceSession.__new__(InferenceSession)
            twin.__dict__.update(self.__dict__)
            twin._lock, twin._forks = threading.RLock(), (None, [])
            if self._program is None:
                return twin
            twin._compile(self._input_shapes)
            self.copy_cache_to(twin)
            return twin

    def copy_cache_to(self, twin: InferenceSession, part: int = 0, parts: int = 1) -> None:
        """Make a fork's cache this session's (same compiled program): what it runs next is
        incremental against this session's reference. part of parts: this call copies every
        parts-th array, largest first, so that many threads can share the copy (numpy copies
        without the GIL)."""
        pairs = [(twin._storage[n].buf, st.buf) for n, st in self._storage.items() if st.kind == "spatial"]
        pairs += [(twin._storage[n].arr, st.arr) for n, st in self._storage.items() if st.kind == "plain"]
        pairs += [(getattr(theirs, a), getattr(mine, a)) for mine, theirs in zip(self._program, twin._program)
                  for a in ("partial", "partials") if hasattr(mine, a)]
        pairs += [(twin._ref_frames[n], ref) for n, ref in self._ref_frames.items()]
        pairs += [(twin._mirrors[n][1], mirror) for n, (_, mirror) in self._mirrors.items()]
        pairs.sort(key=lambda p: -p[1].nbytes)
        for dst, src in pairs[part::parts]:
            np.copyto(dst, src)
        if part == 0:
            twin._fresh, twin._behind = self._fresh, self._behind

    def variant_forks(self, k: int) -> tuple[list, list]:
        """k forks for parallel variants (variants.on_forks, which sets their threads), kept
        between batches; and those of them that the caller must give this session's cache
        again (_copy_state: a copy, not a new compile), because a frame changed it since. Until
        the caller says it copied them (_forks_current), they count as stale."""
        with self._lock:
            version, forks = self._forks
            stale = list(forks) if version != self._version else []
            forks = forks + [self.fork() for _ in range(k - len(forks))]
            self._forks = (version if stale else self._version, forks)
        return forks[:k], [f for f in stale if f in forks[:k]]

    def forks_refreshed(self) -> None:
        """The kept forks hold this session's cache again (on_forks copied them)."""
        self._forks = (self._version, self._forks[1])

    def _declared(self, changed) -> dict | None:
        """{input name: (its per-run change mask, box bounding the marks)} from run_variant's
        `changed`."""
        return variants.declared_masks(self._spatial_inputs, changed, self._diff_masks)

    def _load_variant(self, frames, diffs, journal: Journal) -> None:
        """Write a variant's changed positions into the input caches, journaled; the reference
        frames stay as they are."""
        for name, v in frames.items():
            st = self._storage[name]
            if st.kind == "plain":
                journal.whole(st.arr)
                st.store(v, track=True)
                continue
            mask, nchanged, _ = diffs[name]
            st.mask, self._diff_masks[name] = mask, st.mask  # masks are per run, not state
            declared = self._declared_rows.pop(name, None)
            if declared is not None:  # counted and bounded already
                st.nchanged, st.box = nchanged, declared[2]
            else:
                st.rescan((0, st.H, 0, st.W))
            if nchanged:
                if declared is not None:
                    pix, vals, _ = declared
                else:  # the marked pixels, found inside their box (a patch, not the whole image)
                    pix = self._variant_pix[name]
                    pix = pix[:region.to_pixels(mask, st.W, *st.box, pix)]
                    vals = self._variant_vals[name][:len(pix)]
                    region.gather_pixels(v.reshape(st.C, -1), pix, len(pix), vals)
                journal.rows(st.rows(), pix, len(pix))
                region.scatter_pixels(vals, pix, len(pix), st.buf, st.off)
            if name in self._plane_masks:
                st.planes = self._plane_masks[name]
                st.plane_boxes = [region.scan(pl, st.W, *st.box)[1] if st.box else None for pl in st.planes]

    # --- compile ------------------------------------------------------------------------------
    def _shapes_from_feed(self, feed) -> dict:
        """The first frame's shapes, once its names, types and dtypes are checked."""
        _check_feed_names(feed, {a.name for a in self._input_args})
        shapes = {}
        for a in self._input_args:
            v = feed[a.name]
            _check_array(a.name, v, getattr(v, "shape", None))
            shapes[a.name] = tuple(v.shape)
        return shapes

    def _compile(self, input_shapes: dict) -> None:
        """Bind the input shapes: load, plan and allocate every cache. A failure leaves the
        session unbound; a model reuserun's kernels cannot run (ir.NotNative) runs whole in
        onnxruntime instead, with a warning, unless strict."""
        try:
            n = max((v[0] for v in input_shapes.values() if len(v) in (3, 4)), default=1)
            if self.batch == "streams" and n > 1:
                from reuserun.runtime.batch_streams import BatchStreams
                self._streams = BatchStreams(self._single_stream, input_shapes, n)
                return
            self._bind(input_shapes)
        except NotNative as e:
            self._program = None
            if self.strict:
                raise
            self._run_whole_in_onnxruntime(str(e))
        except MemoryError as e:
            self._program = None
            sizes = ", ".join(f"{k} {tuple(v)}" for k, v in input_shapes.items())
            raise ModelError(f"not enough memory for this model's caches at input shape(s) {sizes}") from e
        except BaseException:
            self._program = None
            raise

    def _bind(self, input_shapes: dict) -> None:
        for a in self._input_args:
            if a.name not in input_shapes:
                raise ValueError(f"no shape given for input {a.name!r}")
            shape = input_shapes[a.name]
            if len(shape) in (3, 4) and shape[0] != 1:
                raise NotNative(f"input {a.name!r} holds a batch of {shape[0]} (shape {tuple(shape)}); "
                                f"reuserun's caches hold one frame")
        self._model = _compiled(self._native_proto, self._digest, input_shapes, self.strict)
        self._graph = self._model.graph
        _check_memory(self._graph)
        self._input_shapes = dict(input_shapes)
        self._channels_last = self._graph.channels_last_inputs
        self._as_given = {}  # channels-last inputs: the frame as given, for onnxruntime
        # ... and transposed into a buffer of its own, reused frame after frame (a frame is
        # copied into the caches before the call returns)
        self._channels_first = {n: np.empty(self._graph.tensors[n].shape, np.float32) for n in self._channels_last}
        meta = {p.key: p.value for p in self._proto.metadata_props}
        self._stacks = frame_stack_inputs(self._graph, self.frame_stack, meta)
        may_shift = self._shift_allowed(sum(len(s) in (3, 4) for s in input_shapes.values()))
        steps, storage = Compiler(self._graph, self._model.packed, self._stacks,
                                  slack=SHIFT_SLACK if may_shift else 0.0).build()
        self._program = steps
        self._storage = storage
        self._profiler = StepProfiler(steps, self._trace) if self._profiling else None
        # channels-first copies of spatial outputs, each in a buffer with its cache's slack, so
        # a shifted frame slides it as the cache slides (_slide_mirrors)
        self._mirror_bufs = {n: [aligned_zeros(storage[n].C * storage[n].npix + storage[n].owner.slack), 0]
                             for n in self._graph.outputs if storage[n].kind == "spatial"}
        self._mirrors = {n: (storage[n], buf[:storage[n].C * storage[n].npix].reshape(self._graph.tensors[n].shape))
                         for n, (buf, _) in self._mirror_bufs.items()}
        # change masks of spatial inputs, kept apart from the cache until a frame is accepted
        self._diff_masks = {n: np.empty(s.npix, np.uint8) for n, s in storage.items()
                            if n in input_shapes and s.kind == "spatial"}
        # the reference frames in their own (C, H*W) layout, so diffing is a contiguous compare;
        # each lies in a buffer with the input cache's slack, so a shift slides it (_slide_input)
        self._ref_bufs = {n: [aligned_zeros(storage[n].C * storage[n].npix + storage[n].slack), 0]
                          for n in self._diff_masks}
        self._ref_frames = {n: buf[:storage[n].C * storage[n].npix].reshape(storage[n].C, -1)
                            for n, (buf, _) in self._ref_bufs.items()}
        self._plane_masks = {n: np.zeros((storage[n].C, storage[n].npix), np.uint8) for n in self._stacks}
        self._apply_thresholds()
        self._shifter = Shifter(self._graph, steps, storage)
        self._detectors = {n: ShiftDetector(storage[n].npix) for n in self._diff_masks}
        self._variant_pix = {n: np.empty(s.npix, np.int32) for n, s in storage.items() if n in self._diff_masks}
        self._variant_vals = {n: np.empty((s.npix, s.C), np.float32)
                              for n, s in storage.items() if n in self._diff_masks}
        self._journal = Journal()  # run_variant's undo log, its scratch kept between variants
        self._declared_rows = {}  # run_variant: declared pixels and their values, checked
        self._spatial_inputs = {a.name: storage[a.name] for a in self._input_args if storage[a.name].kind == "spatial"}
        self._frame_stats.bind(steps, {n: st.npix for n, st in self._spatial_inputs.items()})
        self._fresh = True
        self._behind = False  # the last frame went to onnxruntime: the cache holds an older one
        # what every frame's path reads, worked out once: the feed's names, each input's
        # (name, shape, storage), whether shift reuse applies, a still frame's computed counts
        self._output_names = list(self._graph.outputs)
        self._feed_names = frozenset(a.name for a in self._input_args)
        self._input_specs = [(a.name, tuple(input_shapes[a.name]), storage[a.name]) for a in self._input_args]
        self._shift_ok = self._shifter.supported and self._shift_allowed(len(self._diff_masks))
        self._still = [0] * len(steps)
        self._fast = None  # per step, its compiled incremental path under this policy (_propagate)
        self._runners = {}  # output names -> the native loop over declared variants, or None
        self._slow = None  # the steps without one (_slow_steps)
        self._moved = None  # _validate's scratch: (input, shift) of a frame found to be a shift
        self._heavy_from = None  # changed fraction of the last frame whose change reached HEAVY_MACS
        self._dense_choice = DenseChoice()  # exact frames: dense or incremental, by measured time
        # dense frames past the first run without the caches (_run_scratch), compiled when first
        # needed; not for frame stacks (their partials are caches) nor under the profiler
        self._scratch = None
        self._last_heavy = False  # whether the last frame was heavy
        self._scratch_ok = self.policy_name != "dense" and not self._stacks and not self._profiling
        if self.dense_backend == "onnxruntime" and self._ort is None:
            # made now, so the first frame handed to it does not also pay for loading the model
            from reuserun.runtime.ort_backend import ort_session
            self._ort = ort_session(self._native_proto.SerializeToString(), self.threads,
                                    self._settings.optimization_level)

    def _apply_thresholds(self) -> None:
        table = dict(self.layer_thresholds)
        default = table.pop("default", 0.0)
        known = set()
        for step in self._program:
            if not hasattr(step, "thr") or step.node is None:
                continue
            names = [step.node.name] + [o.name for o in step.outputs]
            known.update(names)
            step.thr = next((table[n] for n in names if n in table), default)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"layer_thresholds names no layer of this model: {unknown}")

    # --- per frame ----------------------------------------------------------------------------
    def _check_output_names(self, output_names) -> list[str]:
        if isinstance(output_names, (str, bytes)) or not isinstance(output_names, (list, tuple)):
            raise InputError(f"output_names must be None or a list of output names, got {output_names!r}")
        unknown = [n for n in output_names if n not in self._graph.outputs]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are {self._graph.outputs}")
        return list(output_names)

    def _validate(self, feed: dict, incremental: bool = False, declared: dict | None = None):
        """Check every input before anything is touched; returns contiguous frames and, for
        spatial inputs on an incremental frame, their change masks (declared ones taken as
        given)."""
        if feed.keys() != self._feed_names:
            _check_feed_names(feed, self._feed_names)
        frames, diffs = {}, {}
        self._declared_rows.clear()
        self._as_given.clear()  # no frame of an earlier call is kept alive
        self._moved = None
        full = not incremental and (self._fresh or self.policy_name == "dense")
        shift = not incremental and self._shift_ok
        for name, shape, st in self._input_specs:
            v = feed[name]
            if type(v) is not np.ndarray or v.dtype != np.float32 or v.shape != shape:
                _check_array(name, v, shape)  # an ndarray subclass passes; anything else raises
            if name in self._channels_last:  # the model's own leading Transpose, done here
                self._as_given[name] = v
                v = self._channels_first[name]
                np.copyto(v, self._as_given[name].transpose(0, 3, 1, 2))
            v = np.ascontiguousarray(v)
            if st.kind == "spatial" and not full and declared and name in declared:
                mask, bound = declared[name]  # written into this input's per-run mask
                # only the declared positions are read: listed, gathered and checked in one pass
                nchanged, box, bad = (region.take_marked(mask, st.W, *bound, v.reshape(st.C, -1),
                                                         self._variant_pix[name],
                                                         self._variant_vals[name]) if bound else (0, None, 0))
                diffs[name] = (mask, nchanged, None)
                pix, vals = self._variant_pix[name][:nchanged], self._variant_vals[name][:nchanged]
                self._declared_rows[name] = (pix, vals, box)
                if name in self._plane_masks:
                    self._plane_masks[name][...] = mask
            elif st.kind == "spatial" and not full:
                mask, f2, ref = self._diff_masks[name], v.reshape(st.C, -1), self._ref_frames[name]
                det = self._detectors[name] if shift else None
                moved = None
                # a steady stream: the last move, verified, without diffing the frame twice
                last = det.verify_last(f2, ref, st.H, st.W, mask, self.threads) if det else None
                if last is not None and not last[1] and last[0] < st.npix // STEADY_SHIFT_PART:
                    moved, (nchanged, bad) = det.last, last
                if moved is None:
                    nchanged, bad = region.diff_frame(f2, ref, self.threshold, mask, self.threads)
                    found = None
                    if det is not None and not bad and nchanged > st.npix // SHIFT_SEARCH_PART:
                        found = det.search(f2, ref, st.C, st.H, st.W, nchanged, mask, self.threads)
                    elif det is not None:
                        det.last = None
                    if found is not None:
                        moved, nchanged = found
                if bad and self.accept_nan:  # a non-finite position counts as changed, every frame
                    mask |= ~(np.isfinite(f2).all(axis=0) & np.isfinite(ref).all(axis=0))
                    nchanged = int(np.count_nonzero(mask))
                    bad = 0
                diffs[name] = (mask, nchanged, moved)
                if moved is not None:
                    self._moved = (name, moved)
                if name in self._plane_masks and nchanged and not bad:
                    region.diff_planes(v.reshape(st.C, -1), self._ref_frames[name], self.threshold,
                                       self._plane_masks[name], self.threads)
            else:
                bad = not self.accept_nan and not region.all_finite(v.reshape(-1))
            if bad:
                raise _non_finite(name)
            frames[name] = v
        return frames, diffs

    def _load_inputs(self, frames, diffs, full) -> bool:
        """Accept the frame into the inputs' caches and masks; returns whether anything changed
        (always on a full frame)."""
        changed = full
        for name, v in frames.items():
            st = self._storage[name]
            if st.kind == "plain":
                st.store(v, track=not full)
            elif full:
                st.load(v, self.threads)
                np.copyto(self._ref_frames[name], v.reshape(st.C, -1))
                st.mark_all()
            elif diffs[name][2] is not None:  # moved
                mask = diffs[name][0]
                if not self._shifter.plan(st, diffs[name][2]).slides_input:  # else _slide_input writes it
                    st.load(v, self.threads)
                    np.copyto(self._ref_frames[name], v.reshape(st.C, -1))
                st.mask, self._diff_masks[name] = mask, st.mask
                st.rescan((0, st.H, 0, st.W))
            else:
                mask, nchanged, _ = diffs[name]
                if nchanged > st.npix // COPY_WHOLE_PART and self.threshold == 0.0:
                    # exact mode: unmarked pixels hold the same bits in the frame and the
                    # reference, so copying the whole frame is the same as copying the marked
                    # pixels, and a plain copy is faster once many are marked
                    st.load(v, self.threads)
                    np.copyto(self._ref_frames[name], v.reshape(st.C, -1))
                elif nchanged:
                    region.apply_frame(v.reshape(st.C, -1), self._ref_frames[name], st.buf, st.off,
                                       self.threshold, mask, self.threads)
                # the accepted change mask becomes the input's; its old mask is the next scratch
                st.mask, self._diff_masks[name] = mask, st.mask
                if nchanged:
                    st.rescan((0, st.H, 0, st.W))
                else:  # the diff wrote every byte of the mask: all zero, nothing to scan
                    st.nchanged, st.box = 0, None
                if name in self._plane_masks:
                    st.planes = self._plane_masks[name]
                    st.plane_boxes = [region.scan(pl, st.W, *st.box)[1] if st.box else None for pl in st.planes]
            changed = changed or st.changed
        return changed

    # --- dense_backend="onnxruntime" -------------------------------------------------------------
    def _delegates(self, diffs) -> bool:
        """Whether this frame goes to onnxruntime whole: it is no shift, and most of it changed
        or it changed as much as a frame that reached most of the MACs. The first frame is
        reuserun's, so a stream starts with a cache; a still frame too (once caught up, still
        frames cost next to nothing)."""
        if self.dense_backend != "onnxruntime" or self._fresh or self.policy_name == "dense" or not diffs:
            return False
        if any(moved is not None for _, _, moved in diffs.values()):
            return False
        c = self._frame_stats.changed_fraction(diffs)
        heavy = self._heavy_from is not None and c >= self._heavy_from / 2
        return c >= DELEGATE_ABOVE or heavy

    def _chooses_dense(self, changed: float) -> bool:
        """An exact auto frame that changed so much (this fraction of its input) that a dense run
        has been measured faster (runtime/dense_choice.py): the same bits, less time."""
        if (self.policy_name != "auto" or self.dense_backend != "reuserun" or changed <= 0.0
                or self.threshold != 0.0 or self.layer_thresholds):
            return False
        return self._dense_choice.dense(changed)

    def _all_changed(self, diffs) -> bool:
        """Whether an exact frame changed every position of every spatial input: it reaches every
        position of every layer, so it runs dense rather than plan each step to find that out.
        (Under thresholds a changed position may keep some of its old values.)"""
        return (bool(diffs) and self.threshold == 0.0 and not self.layer_thresholds
                and all(n == self._storage[name].npix for name, (_, n, _) in diffs.items()))

    def _note_weight(self, computed, full) -> None:
        """After a frame reuserun computed: whether its change, this large, reached HEAVY_MACS
        of the dense MACs (a dense frame says nothing about that, a still frame neither)."""
        if full:
            return
        c = self._frame_stats.changed_fraction(self._frame_stats.last_diffs)
        if c == 0:
            return
        self._heavy_from = c if self._frame_stats.macs(computed) >= HEAVY_MACS * self._frame_stats.dense_macs else None

    def _run_delegated(self, names, frames, diffs, t0) -> list[np.ndarray]:
        """onnxruntime's outputs for the frame, which becomes the reference the next frame is
        diffed against; the cache stays as it was, behind it."""
        outs = self._ort.run(names, {n: self._as_given.get(n, v) for n, v in frames.items()})
        self._as_given.clear()
        for name, v in frames.items():
            st = self._storage[name]
            if st.kind == "spatial":
                np.copyto(self._ref_frames[name], v.reshape(st.C, -1))
            else:
                st.store(v, track=False)
        self._behind = True
        self._version += 1
        computed = [getattr(step, "npix", 1) for step in self._program]
        self._frame_stats.record(computed, diffs, False, time.perf_counter() - t0, backend="onnxruntime")
        return [np.asarray(o, np.float32) for o in outs]

    def _catch_up(self) -> None:
        """Compute the reference frame densely, so a cache left behind by delegated frames
        holds it again."""
        try:
            for name, ref in self._ref_frames.items():
                st = self._storage[name]
                st.load(ref.reshape(self._graph.tensors[name].shape), self.threads)
                st.mark_all()
            self._propagate(True)
            self._update_mirrors(True)
        except BaseException:
            self._fresh = True
            raise
        self._behind = False

    def _propagate(self, full: bool, journal: Journal | None = None) -> list[int]:
        """Run every step; journal: the undo log the steps were given (variants), or None."""
        if self._profiler is not None and journal is None:
            if full:
                return self._profiler.run_full(self._policy, self.threads)
            return self._profiler.run_incremental(self._fast_steps(), self._policy, self.threads, None)
        if full:  # (variants, the only runs with a journal, are never full)
            return driver.run_full(self._program, self._policy, self.threads)
        return driver.run_incremental(self._program, self._fast_steps(), self._policy, self.threads, journal)

    def _fast_steps(self) -> list:
        """Per step, its compiled incremental path (a driver.NativeStep) under this policy, or None."""
        if self._fast is None:
            self._fast = [step.fast if getattr(step, "fast", None) is not None and step.compiled(self._policy)
                          else None for step in self._program]
        return self._fast

    def _slow_steps(self) -> list:
        """The steps without a compiled incremental path under this policy."""
        if self._slow is None:
            self._slow = [step for step, f in zip(self._program, self._fast_steps()) if f is None]
        return self._slow

    def _propagate_shifted(self, name: str, d, frame) -> list[int]:
        """A frame that is the reference moved by d: move the caches, then compute what the
        shift plan says."""
        st = self._storage[name]
        plan = self._shifter.plan(st, d)
        self._shifter.apply(plan, self.threads)
        if plan.slides_input:
            self._slide_input(name, st, d, frame)
        computed = driver.run_shifted(self._program, self._fast_steps(), plan.modes, plan.exposed,
                                      plan.exposed_per_output, self._policy, self.threads)
        self._slide_mirrors(plan)
        return computed

    def _slide_mirrors(self, plan) -> None:
        """Outputs that moved slide their channels-first copy by their own shift, every channel
        plane alike, as their cache slid: then only their marked positions need converting (the
        exposed band is marked). An output recomputed whole is marked whole."""
        for name, (st, mirror) in self._mirrors.items():
            d = plan.shifts.get(id(st))
            if not d or d == (0, 0):
                continue
            view = _slide_window(self._mirror_bufs[name], st.owner.slack, st.C * st.npix, d[0] * st.W + d[1])
            if view is not None:
                self._mirrors[name] = (st, view.reshape(mirror.shape))

    def _slide_input(self, name: str, st, d, frame) -> None:
        """The input's cache slid with the others: slide its reference frame alike (every
        channel plane moves by the same flat shift), then write the frame's marked pixels, the
        only ones where the moved reference does not hold the frame already, into both."""
        view = _slide_window(self._ref_bufs[name], st.slack, st.C * st.npix, d[0] * st.W + d[1])
        if view is not None:
            self._ref_frames[name] = view.reshape(st.C, -1)
        if st.nchanged:
            y0, y1, x0, x1 = st.box
            region.apply_frame(frame.reshape(st.C, -1), self._ref_frames[name], st.buf, st.off, -1.0, st.mask,
                               self.threads, y0 * st.W + x0, (y1 - 1) * st.W + x1)

    def _shift_allowed(self, spatial_inputs: int) -> bool:
        """Shift reuse is for exact, incremental sessions with one spatial input that is not a
        frame stack."""
        return (self.shift and self.threshold == 0.0 and not self.layer_thresholds and not self._stacks
                and self.policy_name != "dense" and spatial_inputs == 1)

    def _update_mirrors(self, full: bool) -> None:
        """Channels-first copies of spatial outputs, updated where they changed. Unmarked
        positions already hold the cache's values, so a one-channel output (a mask or score map)
        copies its changed rows whole: a plain copy beats checking every mark."""
        for st, mirror in self._mirrors.values():
            if full or st.nchanged:
                lo, hi = (0, st.npix) if full else (st.box[0] * st.W, st.box[1] * st.W)
                region.to_channels_first(st.buf, st.off, st.C, None if full or st.C == 1 else st.mask,
                                         mirror.reshape(st.C, -1), self.threads, lo, hi)

    def _output(self, name, into: np.ndarray | None = None) -> np.ndarray:
        src = self._mirrors[name][1] if name in self._mirrors else self._storage[name].logical()
        if into is not None:
            np.copyto(into, src)
            return into
        return np.array(src, dtype=np.float32, copy=True, order="C")

    def profile(self) -> dict:
        """With profile=True: per step, its time, MACs, GMAC/s, positions and share of the frame,
        averaged over the frames reuserun computed so far (frames handed to onnxruntime are not
        counted), and the frame's time outside the steps (overhead_ms)."""
        if not self._profiling:
            raise ValueError("profile() needs InferenceSession(..., profile=True)")
        if self._profiler is None:
            return {"frames": 0, "frame_ms": 0.0, "steps_ms": 0.0, "overhead_ms": 0.0, "steps": []}
        return self._profiler.table(*self._frame_stats.weights())
