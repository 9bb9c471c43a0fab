"""onnxprune: structured pruning of ONNX models, verified exactly."""

__version__ = "0.1.0"
