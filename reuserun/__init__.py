"""reuserun: run ONNX CNNs on streams of similar frames, recomputing only what changed."""
import os

# Kernel threads wait for the next parallel region spinning briefly (2000 spins, tens of
# microseconds), then sleep: a frame runs many short OpenMP regions with Python between them, and
# waking a sleeping thread for each costs about as much as a small region, while long spins
# (libgomp's default) stall every region when other processes keep the cores busy. libgomp reads
# these variables once, when it loads: they are set while reuserun's native modules load the
# OpenMP runtime, then taken back, so that neither an OpenMP library loaded later (PyTorch's own
# copy, say) nor a child process sees them. Set OMP_WAIT_POLICY or GOMP_SPINCOUNT before
# importing reuserun to choose otherwise (PASSIVE alone: never spin).
_SPIN_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "2000"}
_set_here = [] if any(k in os.environ for k in _SPIN_DEFAULTS) else list(_SPIN_DEFAULTS)
os.environ.update({k: _SPIN_DEFAULTS[k] for k in _set_here})
try:
    from reuserun import isa

    isa.install()  # before any native module loads: which ISA level's build they come from

    from reuserun.ir import InputError, ModelError, UnsupportedOpsError
    from reuserun.kernels.info import openmp_enabled  # loads the OpenMP runtime
    from reuserun.runtime.ort_api import IOBinding, ModelMetadata, RunTerminated
    from reuserun.runtime.session import InferenceSession, NodeArg
finally:
    for _name in _set_here:
        os.environ.pop(_name, None)

__version__ = "0.1.0"
__all__ = ["IOBinding", "InferenceSession", "InputError", "ModelError", "ModelMetadata", "NodeArg",
           "RunTerminated", "UnsupportedOpsError", "__version__", "get_available_providers", "get_device",
           "openmp_enabled"]

# onnxruntime's option and value classes, so that `import reuserun as ort` runs a program written
# for onnxruntime unchanged; looked up when first used, so importing reuserun stays light
_FROM_ONNXRUNTIME = ("SessionOptions", "RunOptions", "OrtValue", "GraphOptimizationLevel", "ExecutionMode",
                     "ExecutionOrder", "get_all_providers", "set_default_logger_severity", "set_seed")


def get_available_providers() -> list[str]:
    return ["CPUExecutionProvider"]


def get_device() -> str:
    return "CPU"


def __getattr__(name: str):
    if name in _FROM_ONNXRUNTIME:
        import onnxruntime
        return getattr(onnxruntime, name)
    raise AttributeError(f"module 'reuserun' has no attribute {name!r}")
