"""onnxruntime's session API on reuserun's terms: what a SessionOptions, a providers list and a
RunOptions ask of a session, the model's metadata, IOBinding, and the profile file onnxruntime's
tools read. onnxruntime's own classes (SessionOptions, RunOptions, OrtValue) are taken as they are,
so a program written for onnxruntime passes them unchanged."""
from __future__ import annotations

import ctypes
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from reuserun.ir import InputError

CPU = "CPUExecutionProvider"


class RunTerminated(RuntimeError):
    """A run refused because its RunOptions.terminate was set (onnxruntime's message)."""


@dataclass(frozen=True)
class SessionSettings:
    """What a SessionOptions asks of a reuserun session."""
    threads: int | None = None          # intra_op_num_threads; None: every core
    profile_prefix: str | None = None   # enable_profiling: the trace file's prefix
    optimization_level: object = None   # graph_optimization_level, for the embedded onnxruntime
    sess_options: object = None         # the object itself, for get_session_options()


def _ort():
    import onnxruntime
    return onnxruntime


def read_session_options(sess_options) -> SessionSettings:
    """The settings a SessionOptions carries. A string in its place is reuserun's policy given
    where onnxruntime takes its options: refused, since the two APIs disagree on that position."""
    if sess_options is None:
        return SessionSettings()
    if isinstance(sess_options, str):
        raise ValueError(f"the second argument is onnxruntime's sess_options (a SessionOptions); "
                         f"give reuserun's policy by name: policy={sess_options!r}")
    ort = _ort()
    if not isinstance(sess_options, ort.SessionOptions):
        raise ValueError(f"sess_options must be an onnxruntime.SessionOptions, got {type(sess_options).__name__}")
    if sess_options.optimized_model_filepath:
        warnings.warn(f"reuserun does not write an optimized model; optimized_model_filepath="
                      f"{sess_options.optimized_model_filepath!r} is ignored", stacklevel=3)
    if sess_options.execution_mode == ort.ExecutionMode.ORT_PARALLEL:
        warnings.warn("reuserun runs a model's layers in order with intra-op threads; "
                      "execution_mode=ORT_PARALLEL is ignored", stacklevel=3)
    threads = sess_options.intra_op_num_threads or None
    prefix = (sess_options.profile_file_prefix or "onnxruntime_profile_") if sess_options.enable_profiling else None
    level = sess_options.graph_optimization_level
    return SessionSettings(threads, prefix, None if level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL else level,
                           sess_options)


def session_options_for(settings: SessionSettings, threads: int):
    """get_session_options(): the options given, or ones that describe this session."""
    if settings.sess_options is not None:
        return settings.sess_options
    so = _ort().SessionOptions()
    so.intra_op_num_threads = threads
    return so


def read_providers(providers, provider_options) -> list[str]:
    """reuserun runs on the CPU: CPUExecutionProvider is honoured, any other provider is named in a
    warning and the session runs on the CPU, as onnxruntime does with a provider it lacks."""
    if providers is None:
        return [CPU]
    if isinstance(providers, (str, bytes)) or not isinstance(providers, (list, tuple)):
        raise ValueError(f"providers must be a list of provider names, got {providers!r}")
    if provider_options is not None and (not isinstance(provider_options, (list, tuple))
                                         or len(provider_options) != len(providers)):
        raise ValueError("provider_options must be a list with one dict per provider")
    names = []
    for p in providers:
        name = p[0] if isinstance(p, tuple) and len(p) == 2 else p
        if not isinstance(name, str):
            raise ValueError(f"providers must hold names or (name, options) pairs, got {p!r}")
        names.append(name)
    others = [n for n in names if n != CPU]
    if others:
        warnings.warn(f"reuserun runs on the CPU only; {', '.join(others)} ignored, "
                      f"running on {CPU}", stacklevel=3)
    return [CPU]


def check_run_options(run_options) -> str:
    """The run's log tag; a run whose terminate flag is set is refused before it starts."""
    if run_options is None:
        return ""
    ort = _ort()
    if not isinstance(run_options, ort.RunOptions):
        raise InputError(f"run_options must be an onnxruntime.RunOptions, got {type(run_options).__name__}")
    if run_options.terminate:
        raise RunTerminated("Exiting due to terminate flag being set to true.")
    return run_options.logid


def plain_feed(input_feed: dict) -> dict:
    """OrtValue inputs as numpy arrays (onnxruntime takes both)."""
    if not isinstance(input_feed, dict):
        raise InputError("input_feed must be a dict {input name: numpy array}")
    if all(type(v) is np.ndarray for v in input_feed.values()):
        return input_feed
    ort = _ort()
    return {k: _ortvalue_array(k, v) if isinstance(v, ort.OrtValue) else v for k, v in input_feed.items()}


def _ortvalue_array(name: str, value) -> np.ndarray:
    if not value.is_tensor() or value.device_name().lower() != "cpu":
        raise InputError(f"input {name!r}: only CPU tensors are accepted as OrtValues")
    return value.numpy()


@dataclass(frozen=True)
class ModelMetadata:
    """What onnxruntime's get_modelmeta() returns."""
    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict = field(default_factory=dict)


def model_metadata(proto) -> ModelMetadata:
    return ModelMetadata(proto.producer_name, proto.graph.name, proto.domain, proto.doc_string,
                         proto.graph.doc_string, proto.model_version,
                         {p.key: p.value for p in proto.metadata_props})


class ProfileTrace:
    """Events in Chrome's trace format, as onnxruntime's profiler writes them: a "model_run" per
    frame and a "<step>_kernel_time" per step run; written by end_profiling() (or when the
    session is collected), to <prefix>_<date>.json."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.start_ns = time.time_ns()
        self._origin = time.perf_counter()
        self.events: list = []
        self.path: str | None = None
        self._pid = os.getpid()

    def add(self, category: str, name: str, t0: float, t1: float, args: dict) -> None:
        self.events.append({"cat": category, "pid": self._pid, "tid": threading.get_ident(),
                            "dur": int(1e6 * (t1 - t0)), "ts": int(1e6 * (t0 - self._origin)),
                            "ph": "X", "name": name, "args": args})

    def write(self) -> str:
        if self.path is None:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(self.start_ns / 1e9))
            self.path = f"{self.prefix}_{stamp}_{self.start_ns // 1000 % 1000:03d}.json"
            with open(self.path, "w") as f:
                json.dump(self.events, f)
        return self.path


def _view(buffer_ptr: int, shape, element_type) -> np.ndarray:
    """A numpy array over memory the caller owns (what onnxruntime reads and writes through a
    raw pointer; keeping it valid is the caller's part, as there)."""
    dtype = np.dtype(element_type)
    if dtype not in (np.float32, np.float16):
        raise InputError(f"reuserun binds float32 or float16 buffers, got {dtype}")
    if not isinstance(buffer_ptr, int) or buffer_ptr <= 0:
        raise InputError(f"buffer_ptr must be a positive address, got {buffer_ptr!r}")
    shape = tuple(int(d) for d in shape)
    raw = (ctypes.c_uint8 * (int(np.prod(shape)) * dtype.itemsize)).from_address(buffer_ptr)
    return np.frombuffer(raw, dtype).reshape(shape)


def _cpu(device_type, device_id) -> None:
    if str(device_type).lower() != "cpu" or device_id != 0:
        raise InputError(f"reuserun binds CPU memory only, got device {device_type!r} {device_id}")


class IOBinding:
    """onnxruntime's IOBinding: inputs bound once, outputs written into buffers the caller
    preallocated (or into arrays the session allocates per run)."""

    def __init__(self):
        self._inputs: dict = {}
        self._outputs: dict = {}   # name -> preallocated array or None
        self.results: list = []    # the last run's outputs (the bound buffers where there are)

    def bind_cpu_input(self, name: str, arr_on_cpu: np.ndarray) -> None:
        self._inputs[name] = arr_on_cpu

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr) -> None:
        _cpu(device_type, device_id)
        self._inputs[name] = _view(buffer_ptr, shape, element_type)

    def bind_ortvalue_input(self, name: str, ortvalue) -> None:
        self._inputs[name] = ortvalue

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None,
                    buffer_ptr=None) -> None:
        _cpu(device_type, device_id)
        if buffer_ptr is None:
            self._outputs[name] = None
            return
        if shape is None:
            raise InputError(f"output {name!r}: a bound buffer needs its shape")
        self._outputs[name] = _view(buffer_ptr, shape, np.float32 if element_type is None else element_type)

    def bind_ortvalue_output(self, name: str, ortvalue) -> None:
        if not ortvalue.is_tensor() or ortvalue.device_name().lower() != "cpu":
            raise InputError(f"output {name!r}: only CPU tensors can be bound")
        self._outputs[name] = _view(ortvalue.data_ptr(), ortvalue.shape(),
                                    np.float16 if ortvalue.data_type() == "tensor(float16)" else np.float32)

    def clear_binding_inputs(self) -> None:
        self._inputs.clear()

    def clear_binding_outputs(self) -> None:
        self._outputs.clear()

    def synchronize_inputs(self) -> None:
        """CPU memory: nothing to wait for."""

    def synchronize_outputs(self) -> None:
        """CPU memory: nothing to wait for."""

    def bound_inputs(self) -> dict:
        return dict(self._inputs)

    def bound_outputs(self) -> tuple[list, list]:
        """(output names, their buffers or None) in the order they were bound."""
        if not self._outputs:
            raise InputError("no output is bound; bind_output() at least one")
        return list(self._outputs), list(self._outputs.values())

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        return [r.copy() for r in self.results]

    def get_outputs(self) -> list:
        return [owned_ortvalue(r) for r in self.results]


def owned_ortvalue(arr: np.ndarray):
    """An OrtValue holding its own copy of arr (one made from the array would share its memory,
    and arrays read back from it outlive neither)."""
    value = _ort().OrtValue.ortvalue_from_shape_and_type(list(arr.shape), arr.dtype)
    value.update_inplace(np.ascontiguousarray(arr))
    return value
