"""ONNX front-end: load_model turns an ONNX model into reuserun's IR (reuserun.ir.Graph)."""
from .converters import CONVERTERS
from .loader import load_model

__all__ = ["load_model", "CONVERTERS"]
