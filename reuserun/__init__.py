"""reuserun: run ONNX CNNs on streams of similar frames, recomputing only what changed."""
import os

# Kernel threads wait for the next parallel region spinning briefly (2000 spins, tens of
# microseconds), then sleep: a frame runs many short OpenMP regions with Python between them, and
# waking a sleeping thread for each costs about as much as a small region, while long spins
# (libgomp's default) stall every region when other processes keep the cores busy. Set
# OMP_WAIT_POLICY or GOMP_SPINCOUNT before importing reuserun to choose otherwise (PASSIVE alone:
# never spin); libgomp reads them once, when it loads.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["GOMP_SPINCOUNT"] = "2000"

from reuserun import isa  # noqa: E402

isa.install()  # before any native module loads: which ISA level's build they come from

from reuserun.ir import InputError, ModelError, UnsupportedOpsError  # noqa: E402
from reuserun.kernels.info import openmp_enabled  # noqa: E402
from reuserun.runtime.ort_api import IOBinding, ModelMetadata, RunTerminated  # noqa: E402
from reuserun.runtime.session import InferenceSession, NodeArg  # noqa: E402

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
