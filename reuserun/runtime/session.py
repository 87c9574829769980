"""InferenceSession: onnxruntime's surface over a cache of every layer's last activations.

The session is a facade. It checks its arguments, binds the input shapes and speaks
onnxruntime's API; the work is done by parts, each with one job and a public interface:
runtime/frame_loop.py (the path of one frame), runtime/inputs.py (change detection),
runtime/executor.py (running the program), runtime/delegate.py (dense frames and whole models),
runtime/variants.py (what-if runs) and runtime/frame_stats.py (the figures of each frame)."""
from __future__ import annotations

import threading
import time

import numpy as np

from reuserun.frontend import precision
from reuserun.ir import InputError, ModelError, NotNative
from reuserun.plan.policies import make_policy
from reuserun.runtime import options, ort_api, variants
from reuserun.runtime.compiled import SourceModel, check_memory
from reuserun.runtime.delegate import DENSE_BACKENDS, WholeModel
from reuserun.runtime.frame_loop import FrameLoop, copy_into
from reuserun.runtime.frame_stats import FrameStats
from reuserun.runtime.inputs import shapes_of
from reuserun.runtime.ort_surface import NodeArg, OnnxruntimeSurface

BATCH_MODES = ("dense", "streams")


class InferenceSession(OnnxruntimeSurface):
    """Run an ONNX CNN on a stream of frames, recomputing only what each frame's change reaches.

    The first four arguments are onnxruntime's: the model (a path or bytes), a SessionOptions
    (intra_op_num_threads sets the threads; enable_profiling writes onnxruntime's trace file on
    end_profiling(); graph_optimization_level applies to the embedded onnxruntime session), and
    providers with their options (reuserun runs on the CPU; any other provider is named in a
    warning). reuserun's own options follow by name:

    policy:    "auto" (default), "tiles", "rects", "rect" or "dense" (the reference).
    threshold: input change threshold; 0 means any bit counts (exact mode).
    threads:   kernel threads (default: the CPUs this process may use). Frames run on one thread
               instead while they are measured faster so (another process holding a core makes
               every parallel step wait); stats["threads"] says which.
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
        self._source = SourceModel(path_or_bytes)
        super().__init__(self._source.proto, sess_options, providers, provider_options)
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
        threshold = options.threshold("threshold", threshold)
        self.frame_stack = options.optional_flag("frame_stack", frame_stack)
        self.shift = options.flag("shift", shift)
        self._profiling = options.flag("profile", profile) or self._trace is not None
        self.layer_thresholds, file_threshold = options.layer_thresholds(layer_thresholds)
        if file_threshold is not None and threshold == 0.0:
            threshold = file_threshold  # a tuned file carries its input threshold too
        self.policy_name = policy
        self._policy = make_policy(policy, options.tile(tile))
        self.threshold = threshold
        self.threads = options.threads(self._settings.threads if threads is None else threads)
        self._loop = None  # the bound program and its caches (runtime/frame_loop.py)
        self._whole = None  # a model reuserun cannot run, run whole in onnxruntime (delegate.WholeModel)
        self._frame_stats = FrameStats()
        self._lock = threading.RLock()  # one frame or variant at a time per session
        self._forks = variants.ForkPool()
        if input_shape is not None:
            if not isinstance(input_shape, dict):
                if len(self._source.input_args) != 1:
                    raise ValueError("input_shape must be a dict {name: shape} for a model with several inputs")
                input_shape = {self._source.input_args[0].name: input_shape}
            self._compile({k: options.shape(f"input_shape[{k!r}]", v) for k, v in input_shape.items()})
        elif all(a.shape is not None and all(isinstance(d, int) and d > 0 for d in a.shape)
                 for a in self._source.input_args):
            self._compile({a.name: tuple(a.shape) for a in self._source.input_args})

    # --- onnxruntime surface ------------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        if self._whole is not None:
            return self._whole.get_inputs()
        if self._loop is None:
            return list(self._source.input_args)
        return [NodeArg(a.name, list(self._input_shapes[a.name]), self._source.io_type)
                for a in self._source.input_args]

    def get_outputs(self) -> list[NodeArg]:
        if self._whole is not None:
            return self._whole.get_outputs()
        if self._loop is None:
            return list(self._source.output_args)
        graph = self._loop.graph
        return [NodeArg(o, list(graph.tensors[o].shape), self._source.io_type) for o in graph.outputs]

    # --- what reuserun adds -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the cached state: the next frame is computed in full."""
        if self._loop is not None:
            self._loop.reset()

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

    def mac_fractions(self, counts: np.ndarray) -> np.ndarray:
        """stats["mac_fraction"] of many runs at once (an occlusion map's windows): counts
        (runs, steps) of positions computed, as last_counts gives them."""
        return self._frame_stats.mac_fractions(counts)

    @property
    def channels_last_inputs(self) -> frozenset:
        """Inputs the model takes as (N, H, W, C) through a leading Transpose, which reuserun
        applies to each frame as it arrives (empty until the shapes are bound)."""
        return frozenset() if self._loop is None else self._loop.inputs.channels_last

    @property
    def frame_stack_inputs(self) -> frozenset:
        """Inputs whose channels are a stream's last frames (frame_stack), each computed per
        channel (empty until the shapes are bound)."""
        return frozenset() if self._loop is None else frozenset(self._loop.inputs.plane_masks)

    @property
    def spatial_inputs(self) -> frozenset:
        """Inputs whose positions are diffed one by one (empty until the shapes are bound)."""
        return frozenset() if self._loop is None else frozenset(self._loop.inputs.spatial)

    @property
    def graph(self):
        """The fused IR this session runs (ir.Graph; `reuserun info` prints it), None until the
        shapes are bound or for a model run whole in onnxruntime."""
        return None if self._loop is None else self._loop.graph

    @property
    def program(self) -> tuple:
        """The compiled steps, in the order they run (runtime/steps.py); empty until bound."""
        return () if self._loop is None else tuple(self._loop.executor.program)

    def state(self) -> dict:
        """A read-only look at what the session keeps between frames, for debugging and for
        proving that a frame changed nothing: "tensors" {name: NCHW view of its cache, or its
        array}, "masks" {name: per-position changed marks of the last run}, "references"
        {input name: the reference frame, NCHW}, "kept" {step number: the partial sums it keeps},
        "outputs" {spatial output: its NCHW copy}, and "fresh" (the next frame is computed whole).
        Empty before the shapes are bound."""
        if self._loop is None:
            return {"tensors": {}, "masks": {}, "references": {}, "kept": {}, "outputs": {}, "fresh": True}
        return self._loop.state()

    def memory(self) -> dict:
        """Bytes this session holds: cached activations (what the brief bounds by 2x the model's
        intermediate activations), masks and scratch, output mirrors, and the shared weights."""
        return {} if self._loop is None else self._loop.memory()

    def validate(self, input_feed: dict) -> None:
        """Raises the InputError run() would for this feed, touching nothing."""
        if self._loop is not None:
            self._loop.inputs.check(ort_api.plain_feed(input_feed))

    def profile(self) -> dict:
        """With profile=True: per step, its time, MACs, GMAC/s, positions and share of the frame,
        averaged over the frames reuserun computed so far (frames handed to onnxruntime are not
        counted), and the frame's time outside the steps (overhead_ms)."""
        if not self._profiling:
            raise ValueError("profile() needs InferenceSession(..., profile=True)")
        profiler = None if self._loop is None else self._loop.executor.profiler
        if profiler is None:
            return {"frames": 0, "frame_ms": 0.0, "steps_ms": 0.0, "overhead_ms": 0.0, "steps": []}
        return profiler.table(*self._frame_stats.weights())

    # --- frames -------------------------------------------------------------------------------
    def _run_into(self, output_names, input_feed: dict, run_options, into) -> list[np.ndarray]:
        if not self._source.half:
            return self._run_frame(output_names, input_feed, run_options, into)
        # bound float16 buffers take the float32 outputs as they are copied in
        outs = self._run_frame(output_names, precision.feed_as_float32(input_feed), run_options, into)
        return precision.outputs_as_float16(outs)

    def _run_frame(self, output_names, input_feed: dict, run_options, into) -> list[np.ndarray]:
        tag = ort_api.check_run_options(run_options)
        input_feed = ort_api.plain_feed(input_feed)
        with self._lock:
            t0 = time.perf_counter()
            if self._streams is not None:
                outs = self._streams.run(output_names, input_feed)
                self._frame_stats.replace(dict(self._streams.stats, time_s=time.perf_counter() - t0))
                return self._traced(copy_into(outs, into), t0, tag)
            binds = self._loop is None and self._whole is None
            if binds:
                if self._source.non_float:
                    self._run_whole_in_onnxruntime("its inputs are not all float32")
                else:
                    self._compile(shapes_of(input_feed, [a.name for a in self._source.input_args]))
            if self._whole is not None:
                outs, stats = self._whole.run(output_names, input_feed)
                self._frame_stats.replace(stats)
                return self._traced(copy_into(outs, into), t0, tag)
            if self._streams is not None:  # the first frame made the streams: run it there
                return self._run_frame(output_names, input_feed, run_options, into)
            try:
                names = self._loop.output_names(output_names)
                if into is not None:
                    self._loop.check_bound(names, into, np.float16 if self._source.half else np.float32)
                return self._traced(self._loop.run(names, input_feed, self.threads, into), t0, tag)
            except BaseException:
                if binds:  # a rejected first frame binds no dims
                    self._loop = None
                raise

    def _traced(self, outs: list, t0: float, tag: str) -> list[np.ndarray]:
        """A frame's outputs, and its profile event."""
        if self._trace is not None:
            backend = self.stats["backend"]
            self._trace.add("Session", "model_run", t0, time.perf_counter(),
                            {"backend": backend, "run_tag": tag} if tag else {"backend": backend})
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
        loop = self._cached_loop()
        with self._lock:
            return loop.run_variant(loop.output_names(output_names), input_feed, changed, self.threads)

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
        loop = self._cached_loop()
        with self._lock:
            return loop.declared_batch(self._loop.output_names(names), boxes, frames, fill, first, self.threads)

    def _cached_loop(self) -> FrameLoop:
        """The bound loop, for variants: refused for a model run whole in onnxruntime, or before a
        reference frame."""
        if self._whole is not None:
            raise InputError(f"variants need reuserun's caches, and this model runs whole in onnxruntime "
                             f"({self._whole.reason})")
        if self._loop is None or self._loop.fresh:
            raise InputError("variants compare against a reference: run() the reference frame first")
        return self._loop

    def fork(self) -> InferenceSession:
        """A session sharing this one's weights, with its own copy of the cache: what it runs
        next is incremental against this session's reference."""
        with self._lock:
            twin = InferenceSession.__new__(InferenceSession)
            twin.__dict__.update(self.__dict__)
            twin._lock, twin._forks, twin._frame_stats = threading.RLock(), variants.ForkPool(), FrameStats()
            if self._loop is None:
                return twin
            twin._compile(self._input_shapes)
            self.copy_cache_to(twin)
            return twin

    def copy_cache_to(self, twin: InferenceSession, part: int = 0, parts: int = 1) -> None:
        """Make a fork's cache this session's (same compiled program): what it runs next is
        incremental against this session's reference. part of parts: this call copies every
        parts-th array, largest first, so that many threads can share the copy (numpy copies
        without the GIL)."""
        self._loop.copy_to(twin._loop, part, parts)

    def variant_forks(self, k: int) -> tuple[list, list]:
        """k forks for parallel variants, kept between batches, and those of them that the caller
        must give this session's cache again with copy_cache_to (variants.ForkPool)."""
        with self._lock:
            return self._forks.take(self.fork, k, self._loop.version)

    def forks_refreshed(self) -> None:
        """The kept forks hold this session's cache again (on_forks copied them)."""
        self._forks.refreshed(self._loop.version)

    # --- binding the input shapes ---------------------------------------------------------------
    def _run_whole_in_onnxruntime(self, why: str) -> None:
        self._whole = WholeModel(self._source.native.SerializeToString(), why, self.threads,
                                 self._settings.optimization_level)

    def _single_stream(self, input_shapes: dict) -> InferenceSession:
        """One batch index's session: these options, bound at batch 1."""
        return InferenceSession(self._proto, self._settings.sess_options, threads=self.threads,
                                input_shape=input_shapes, **self._options)

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
            self._loop = None
            if self.strict:
                raise
            self._run_whole_in_onnxruntime(str(e))
        except MemoryError as e:
            self._loop = None
            sizes = ", ".join(f"{k} {tuple(v)}" for k, v in input_shapes.items())
            raise ModelError(f"not enough memory for this model's caches at input shape(s) {sizes}") from e
        except BaseException:
            self._loop = None
            raise

    def _bind(self, input_shapes: dict) -> None:
        for a in self._source.input_args:
            if a.name not in input_shapes:
                raise ValueError(f"no shape given for input {a.name!r}")
            shape = input_shapes[a.name]
            if len(shape) in (3, 4) and shape[0] != 1:
                raise NotNative(f"input {a.name!r} holds a batch of {shape[0]} (shape {tuple(shape)}); "
                                f"reuserun's caches hold one frame")
        model = self._source.compiled(input_shapes, self.strict)
        check_memory(model.graph)
        self._input_shapes = dict(input_shapes)
        opts = dict(policy_name=self.policy_name, policy=self._policy, threshold=self.threshold,
                    layer_thresholds=self.layer_thresholds, shift=self.shift, frame_stack=self.frame_stack,
                    accept_nan=self.accept_nan, dense_backend=self.dense_backend)
        if self.dense_backend == "onnxruntime" and self._ort is None:
            # made now, so the first frame handed to it does not also pay for loading the model
            from reuserun.runtime.ort_backend import ort_session
            self._ort = ort_session(self._source.native.SerializeToString(), self.threads,
                                    self._settings.optimization_level)
        meta = {p.key: p.value for p in self._proto.metadata_props}
        self._loop = FrameLoop(model, [a.name for a in self._source.input_args], input_shapes, opts, meta,
                               self._frame_stats, self._profiling, self._trace, self._ort)

