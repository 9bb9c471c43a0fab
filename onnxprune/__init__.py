"""onnxprune: structured pruning of ONNX models from any framework, verified exactly.

>>> import onnxprune
>>> result = onnxprune.prune("model.onnx", ratio=0.5)   # doctest: +SKIP
>>> result.save("model.pruned.onnx")                    # doctest: +SKIP

The API is imported on first use, so ``import onnxprune`` stays cheap.
"""

from importlib import import_module

from onnxprune.errors import (
    CalibrationDataError,
    ModelLoadError,
    OnnxPruneError,
    UnsupportedModelError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"

_API = ("ModelAnalysis", "PruneResult", "analyze", "prune")

__all__ = [
    "CalibrationDataError",
    "ModelLoadError",
    "OnnxPruneError",
    "UnsupportedModelError",
    "UsageError",
    "VerificationError",
    *_API,
]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module("onnxprune.api"), name)
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
