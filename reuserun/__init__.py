"""reuserun: run ONNX CNNs on streams of similar frames, recomputing only what changed."""
import os

# Kernel threads sleep between parallel regions instead of spinning. A frame runs many short
# regions with Python in between; on a machine whose cores are busy with other work, spinning
# waiters stall every region (measured: 0.03x against 0.4-2x of onnxruntime on this 2-core VM
# while another process used both cores). Set OMP_WAIT_POLICY before importing reuserun to
# choose otherwise; libgomp reads it once, when it loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from reuserun.ir import InputError, ModelError, UnsupportedOpsError  # noqa: E402
from reuserun.kernels.info import openmp_enabled  # noqa: E402
from reuserun.runtime.session import InferenceSession, NodeArg  # noqa: E402

__version__ = "0.1.0"
__all__ = ["InferenceSession", "InputError", "ModelError", "NodeArg", "UnsupportedOpsError",
           "__version__", "openmp_enabled"]
