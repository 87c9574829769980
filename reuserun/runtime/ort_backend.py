"""onnxruntime inside reuserun: the session frames are handed to whole (dense_backend=
"onnxruntime"), and the baseline every benchmark measures against. Both are built alike: the
given intra-op thread count, one inter-op thread, and no spinning between runs, so idle
onnxruntime threads do not take cores from reuserun's OpenMP threads."""
from __future__ import annotations


def ort_session(model_bytes: bytes, threads: int, optimization_level=None):
    """optimization_level: an onnxruntime.GraphOptimizationLevel, or None for its default."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if optimization_level is not None:
        so.graph_optimization_level = optimization_level
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
