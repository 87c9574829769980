"""reuserun: run ONNX CNNs on streams of similar frames, recomputing only what changed."""
from reuserun.ir import ModelError, UnsupportedOpsError
from reuserun.kernels.info import openmp_enabled
from reuserun.runtime.session import InferenceSession, InputError, NodeArg

__version__ = "0.1.0"
__all__ = ["InferenceSession", "InputError", "ModelError", "NodeArg", "UnsupportedOpsError",
           "openmp_enabled", "__version__"]
