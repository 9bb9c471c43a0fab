"""Torchvision architectures exported to ONNX once per exporter, cached outside the repo.

A plain helper for the zoo tests, not a test module. Models are built with random weights
(``weights=None``, no downloads), seeded, in eval mode. Default initialisation leaves every
BatchNorm an identity (mean 0, var 1, weight 1, bias 0) and ConvNeXt's layer scale at 1e-6,
which makes outputs nearly input-independent; those are randomised with a seeded generator so
that pruning mistakes show up in the outputs. Zero-initialised conv/linear biases are kept as
they are: both exporters deduplicate equal initializers into one tensor feeding several nodes
(TorchScript through Identity nodes), a trap the pruner must handle.

Exports are cached in ``$ONNXPRUNE_ZOO_CACHE`` (default ``~/.cache/onnxprune/zoo``), in a
folder keyed by the torch and torchvision versions and by :data:`RECIPE` (bumped whenever the
way models are built or exported changes). A cached file is returned without importing torch.
Writes go to a temporary file in the same folder and are renamed into place under an
exclusive file lock, so parallel pytest-xdist workers never see half-written files and never
export the same model twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["EXPORTERS", "INPUT_SIZE", "RECIPE", "ZOO_MODELS", "cache_dir", "cached", "export",
           "quiet", "sample_input"]  # fmt: skip

#: Bump when the model recipe or the export settings change, to invalidate old caches.
RECIPE = 2

#: Exporter name -> ONNX opset it exports at.
EXPORTERS: dict[str, int] = {"torchscript": 17, "dynamo": 18}


def _build(name: str, builder: str, /, **kwargs: Any) -> torch.nn.Module:
    """Torchvision model ``builder``: seeded random init, randomised norms, eval mode.

    Random running statistics alone (mean 0 / var 1 or small noise around them) do not match
    the actual activation scale of a randomly initialised network, and signals vanish or
    explode through depth: MobileNet, EfficientNet, MnasNet and GoogLeNet outputs then do not
    depend on the input at all. So every BatchNorm's statistics are first calibrated on a
    seeded random batch (as if the network had been trained on it), after randomising the
    affine parameters (weight U(0.5, 1.5), bias N(0, 0.1)), and then perturbed per channel:
    mean shifted by N(0, 0.1) standard deviations, variance scaled by U(0.5, 1.5) factors
    renormalised per layer.
    """
    import torch
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, builder)(weights=None, **kwargs)
    model.eval()
    generator = torch.Generator().manual_seed(1)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape: torch.Size, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * (hi - lo) + lo

    batch_norms = [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm | torch.nn.LayerNorm):
                if module.weight is not None:
                    module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            # ConvNeXt's CNBlock scales its residual branch by a parameter initialised to 1e-6.
            layer_scale = getattr(module, "layer_scale", None)
            if isinstance(layer_scale, torch.nn.Parameter):
                layer_scale.copy_(uniform(layer_scale.shape, 0.1, 0.5))

        momenta = [m.momentum for m in batch_norms]
        for m in batch_norms:  # cumulative average over the calibration batch
            m.reset_running_stats()
            m.momentum = None
            m.train()
        # Enough images that the last (smallest) feature maps give >= 512 samples per channel:
        # small samples misestimate low variances, which then blow activations up with depth.
        size = INPUT_SIZE[name]
        batch = max(8, -(-512 // (size // 32) ** 2))
        model(torch.randn((batch, 3, size, size), generator=generator))
        for m, momentum in zip(batch_norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
            assert m.running_mean is not None and m.running_var is not None
            std = m.running_var.sqrt()
            m.running_mean.add_(normal(std.shape, 0.1) * std)
            # Rescaled so the mean of 1 / factor is 1: the layer's output energy is kept and
            # the per-channel scaling does not compound into blow-up over 50 layers.
            factor = uniform(std.shape, 0.5, 1.5)
            m.running_var.mul_(factor * factor.reciprocal().mean())
            m.num_batches_tracked.zero_()
    return model.eval()


def _zoo_entry(
    name: str, builder: str | None = None, **kwargs: Any
) -> Callable[[], torch.nn.Module]:
    return functools.partial(_build, name, builder or name, **kwargs)


#: Model name -> zero-argument builder of the seeded, randomised, eval-mode torch module.
ZOO_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "resnet18": _zoo_entry("resnet18"),
    "resnet50": _zoo_entry("resnet50"),
    "resnext50_32x4d": _zoo_entry("resnext50_32x4d"),
    "mobilenet_v2": _zoo_entry("mobilenet_v2"),
    "mobilenet_v3_large": _zoo_entry("mobilenet_v3_large"),
    "efficientnet_b0": _zoo_entry("efficientnet_b0"),
    "regnet_y_400mf": _zoo_entry("regnet_y_400mf"),
    "densenet121": _zoo_entry("densenet121"),
    # init_weights=True: explicit (silences the "init will change" warning), trunc_normal_ init.
    "googlenet": _zoo_entry("googlenet", aux_logits=False, init_weights=True),
    "squeezenet1_1": _zoo_entry("squeezenet1_1"),
    "vgg11_bn": _zoo_entry("vgg11_bn"),
    "mnasnet0_5": _zoo_entry("mnasnet0_5"),
    "shufflenet_v2_x1_0": _zoo_entry("shufflenet_v2_x1_0"),
    "convnext_tiny": _zoo_entry("convnext_tiny"),
}

#: Square input size per model (batch 1, 3 channels). Every model downsamples by 32, so 32 is
#: the smallest size that keeps every feature map at least 1x1; 64 is used instead so that the
#: last stage is 2x2 (spatial axes stay distinguishable from the batch axis and 3x3 kernels
#: use more than their centre tap). VGG's AdaptiveAvgPool2d((7, 7)) only exports with the
#: TorchScript exporter when the 7x7 output divides the feature map: 7 x 32 = 224.
INPUT_SIZE: dict[str, int] = {name: 64 for name in ZOO_MODELS} | {"vgg11_bn": 224}


@functools.cache
def _versions_key() -> str:
    torch_version = metadata.version("torch").replace("+", "_")
    vision_version = metadata.version("torchvision").replace("+", "_")
    return f"torch-{torch_version}_torchvision-{vision_version}_recipe-{RECIPE}"


def cache_dir() -> Path:
    """The cache folder for this torch/torchvision pair and recipe (created if missing)."""
    base = os.environ.get("ONNXPRUNE_ZOO_CACHE") or Path.home() / ".cache" / "onnxprune" / "zoo"
    folder = Path(base).expanduser() / _versions_key()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sample_input(name: str, batch: int = 1, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Standard-normal float32 image batch ``(batch, 3, S, S)``; S defaults to INPUT_SIZE[name]."""
    size = size or INPUT_SIZE[name]
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow the exporters' warnings, prints and log records; yields what was printed."""
    sink = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx", "onnxscript")]  # fmt: skip
    levels = [lg.level for lg in loggers]
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield sink
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _export_to(name: str, exporter: str, dynamic_batch: bool, size: int | None, path: Path) -> None:
    import torch

    model = ZOO_MODELS[name]()
    # A dynamic dimension must not be traced with size 1 (torch.export specialises 0 and 1).
    batch = 2 if dynamic_batch else 1
    example = (torch.from_numpy(sample_input(name, batch=batch, size=size)),)
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"]}
    with quiet() as log:
        try:
            if exporter == "torchscript":
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    dynamo=False,
                    dynamic_axes=axes,
                    opset_version=EXPORTERS[exporter],
                    verbose=False,
                    **names,
                )
            else:
                shapes = ({0: "batch"},) if dynamic_batch else None
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    dynamo=True,
                    dynamic_shapes=shapes,
                    opset_version=EXPORTERS[exporter],
                    external_data=False,
                    verbose=False,
                    **names,
                )
        except Exception as error:
            raise RuntimeError(f"{exporter} export of {name} failed; exporter output:\n"
                               f"{log.getvalue()[-4000:]}") from error  # fmt: skip
    stray = path.with_name(path.name + ".data")
    if stray.exists():  # weights must live inside the .onnx file
        stray.unlink()
        raise RuntimeError(f"{exporter} export of {name} wrote external data")


def export(name: str, exporter: str, *, dynamic_batch: bool = False, size: int | None = None) -> Path:
    """Path of the cached ONNX export of zoo model ``name``, exporting it first if needed.

    Args:
        name: a key of :data:`ZOO_MODELS`.
        exporter: ``"torchscript"`` (``dynamo=False``, opset 17) or ``"dynamo"`` (opset 18).
        dynamic_batch: export with a symbolic batch dimension named ``batch``.
        size: image side to trace with, when not :data:`INPUT_SIZE` (benchmarks use 224).

    Returns:
        The path of a complete, self-contained ``.onnx`` file (weights inside) with one input
        ``input`` and one output ``output``.
    """
    if name not in ZOO_MODELS:
        raise KeyError(f"unknown zoo model '{name}'")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter '{exporter}', expected one of {sorted(EXPORTERS)}")
    suffix = ("-dynbatch" if dynamic_batch else "") + (f"-{size}px" if size else "")
    return cached(f"{name}-{exporter}{suffix}.onnx",
                  lambda tmp: _export_to(name, exporter, dynamic_batch, size, tmp))


def cached(filename: str, write: Callable[[Path], None], folder: Path | None = None) -> Path:
    """``folder / filename`` (default folder: :func:`cache_dir`), made first by
    ``write(tmp_path)`` under an exclusive lock and renamed into place when it is missing."""
    folder = folder or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if path.exists():
        return path
    with open(folder / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():  # another worker exported it while we waited
            return path
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}-", suffix=".onnx")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            tmp.chmod(0o644)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
