"""The error hierarchy: every message names the node or tensor at fault and says what to do.

The CLI maps these to exit codes (2 for bad input or usage, 1 for a failed verification);
the library never exits the process.
"""

from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""


class ModelLoadError(OnnxPruneError):
    """The model file is missing, unreadable, truncated or not ONNX."""


class UnsupportedModelError(OnnxPruneError):
    """The model is valid ONNX but onnxprune cannot process it as asked."""


class UsageError(OnnxPruneError):
    """An option is out of range or refers to nothing in the model."""


class VerificationError(OnnxPruneError):
    """The pruned model does not match the masked original (the correctness oracle failed)."""


class CalibrationDataError(OnnxPruneError):
    """Calibration or verification inputs do not match the model's declared inputs."""
