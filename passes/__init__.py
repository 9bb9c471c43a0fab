"""Graph rewrite passes, each usable on its own on an ``onnx_ir.Model``.

- :class:`UntieSharedConstantsPass` gives each reader its own copy of exporter-deduplicated
  constants, so slicing one reader never breaks another.
- :class:`FoldShapeConstantsPass` turns statically known shape computations into literals.
- :class:`ShrinkPass` slices tensors along removed channels and rewrites the attributes and
  shape constants that carry their sizes.
- :class:`CompensatePass` folds the calibration mean of removed channels into the
  consumers' biases.
- :class:`RemoveBlocksPass` drops residual branches: their sums pass the shortcut through.
- :class:`CleanupPass` removes dead nodes and initializers, clears intermediate shapes and
  runs the full ONNX checker.

Passes are imported on first use, so the analysis can use one pass without loading the rest.
"""

from importlib import import_module

_MODULES = {
    "CleanupPass": "cleanup",
    "CompensatePass": "compensate",
    "FoldShapeConstantsPass": "fold_constants",
    "RemoveBlocksPass": "remove_blocks",
    "ShrinkPass": "shrink",
    "UntieSharedConstantsPass": "untie",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
