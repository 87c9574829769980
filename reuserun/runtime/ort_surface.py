"""The part of onnxruntime's InferenceSession API that is the same for every reuserun session:
providers, session options, model metadata, profiling, IOBinding and OrtValues. A subclass runs
the frames (`_run_into`)."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from reuserun.frontend.loader import declared_dims
from reuserun.runtime import ort_api


@dataclass(frozen=True)
class NodeArg:
    """What onnxruntime's get_inputs() / get_outputs() return: name, shape and type."""
    name: str
    shape: list
    type: str = "tensor(float)"


def value_info_dims(value_info) -> list | None:
    """onnxruntime's NodeArg.shape: ints, names of dynamic dims (None when unnamed); None for
    a tensor declared without a shape."""
    dims = declared_dims(value_info.type.tensor_type)
    return None if dims is None else [None if d == "?" else d for d in dims]


class OnnxruntimeSurface:
    """proto: the model; sess_options, providers, provider_options: onnxruntime's arguments."""

    def __init__(self, proto, sess_options, providers, provider_options):
        self._proto = proto
        self._settings = ort_api.read_session_options(sess_options)
        self._providers = ort_api.read_providers(providers, provider_options)
        self._trace = None
        if self._settings.profile_prefix is not None:  # onnxruntime's profiling, to a trace file
            self._trace = ort_api.ProfileTrace(self._settings.profile_prefix)
            weakref.finalize(self, self._trace.write)

    def _run_into(self, output_names, input_feed: dict, run_options, into) -> list[np.ndarray]:
        """run(), writing each output into into[i] where that is an array (IOBinding's buffers)."""
        raise NotImplementedError

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

    def run(self, output_names, input_feed: dict, run_options=None) -> list[np.ndarray]:
        """onnxruntime's run: the outputs named (None or []: all) for this frame. input_feed maps
        every input's name to a float32 numpy array (or OrtValue); run_options is an
        onnxruntime.RunOptions (terminate refuses the run; logid tags its profile event)."""
        return self._run_into(output_names, input_feed, run_options, None)
