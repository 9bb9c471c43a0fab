"""Reading weights a tensor at a time, so a model of any size fits in memory.

Rules: a weight held in external data is memory-mapped by onnx-ir; whoever reads it whole
(scores, checks, slicing) reads it inside ``reading``, and the pages it touched are dropped
afterwards, so at most one tensor's pages per reader stay resident. A function of a
memory-mapped weight is a ``LazyTensor`` (a slice: a ``Sliced``, which keeps its source and
kept positions for :mod:`onnxprune.data_file`): computed from the mapping when it is read
(when a session is built or the model is written) and not kept, so a rewritten model costs no
memory until it is used. Weights already in memory are used as they are. Work that reads
every weight of a model over ``PARALLEL_OVER`` bytes runs on ``THREADS`` readers
(``weight_map``).
"""

from __future__ import annotations

import contextlib
import functools
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import onnx_ir as ir

#: Work over the weights of models holding more than this many bytes of them runs on
#: ``THREADS`` threads (numpy releases the GIL while it reads and sums): the 1.1B Llama's weight
#: norms 1.1 -> 0.35 s on two cores, vgg11_bn's prune 633 -> 590 ms (fresh processes, three
#: each). Below it threads gain a few milliseconds at best and cost some (mnasnet0_5's 8 MB
#: norms 2 -> 4 ms; resnet18's first prune in a process no faster, with outliers).
PARALLEL_OVER = 256 * 2**20
THREADS = 2

_T = TypeVar("_T")
_R = TypeVar("_R")


def model_nbytes(model: ir.Model) -> int:
    """Bytes of tensor data in the main graph's initializers (from their shapes; nothing is
    read)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)  # fmt: skip


def weight_map(fn: Callable[[_T], _R], items: Iterable[_T], model: ir.Model) -> list[_R]:
    """``[fn(x) for x in items]``, on ``THREADS`` threads where ``model`` holds more than
    ``PARALLEL_OVER`` bytes of weights (``fn`` reads weights and must be thread-safe)."""
    items = list(items)
    if model_nbytes(model) <= PARALLEL_OVER or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(fn, items))


def mapped(tensor: ir.TensorProtocol | None) -> bool:
    """Whether ``tensor`` is read from a file or computed on demand (not held in memory)."""
    return isinstance(tensor, ir.ExternalTensor | ir.LazyTensor)


def release(tensor: ir.TensorProtocol | None) -> None:
    """Drop the resident pages of an external-data tensor's mapping (``MADV_DONTNEED``: the
    mapping and any view of it stay valid, and read the file again when next touched)."""
    raw = getattr(tensor, "raw", None) if isinstance(tensor, ir.ExternalTensor) else None
    if isinstance(raw, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        start = (tensor.offset or 0) // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(len(raw), (tensor.offset or 0) + tensor.nbytes)
        with contextlib.suppress(ValueError, OSError):
            raw.madvise(mmap.MADV_DONTNEED, start, max(end - start, 0))


@contextlib.contextmanager
def reading(tensor: ir.TensorProtocol) -> Iterator[np.ndarray]:
    """The tensor's values; an external tensor's pages are dropped on exit."""
    try:
        yield tensor.numpy()
    finally:
        release(tensor)


def derived(tensor: ir.TensorProtocol, fn: Callable[[np.ndarray], np.ndarray],
            shape: tuple[int, ...], name: str | None) -> ir.TensorProtocol:  # fmt: skip
    """``fn`` of the tensor's values (``fn`` must return a new array, never a view): computed
    now for a tensor in memory, when read for a mapped one."""
    if not mapped(tensor):
        return ir.Tensor(np.ascontiguousarray(fn(tensor.numpy())), name=name)
    return ir.LazyTensor(_computing(tensor, fn, name), dtype=tensor.dtype,
                         shape=ir.Shape(shape), name=name)  # fmt: skip


def _computing(tensor: ir.TensorProtocol, fn: Callable[[np.ndarray], np.ndarray],
               name: str | None) -> Callable[[], ir.Tensor]:  # fmt: skip
    """A function computing ``fn`` of the mapped tensor's values when called (the pages it
    read are dropped afterwards)."""

    def compute() -> ir.Tensor:
        with reading(tensor) as array:
            out = fn(array)
            out = out.copy() if np.shares_memory(out, array) else np.ascontiguousarray(out)
        return ir.Tensor(out, name=name)

    return compute


class Sliced(ir.LazyTensor):
    """A mapped tensor taken at the kept positions ``axes[axis]`` of each listed axis, computed
    when read; ``source`` and ``axes`` let a writer slice it into a buffer of its own
    (:mod:`onnxprune.data_file`)."""

    __slots__ = ("axes", "source")

    def __init__(self, source: ir.TensorProtocol, axes: Mapping[int, np.ndarray],
                 name: str | None) -> None:  # fmt: skip
        shape = list(source.shape.numpy())
        for axis, kept in axes.items():
            shape[axis] = int(kept.size)
        super().__init__(_computing(source, functools.partial(take_kept, axes=axes), name),
                         dtype=source.dtype, shape=ir.Shape(shape), name=name)  # fmt: skip
        self.source = source
        self.axes = dict(axes)


def take_kept(array: np.ndarray, axes: Mapping[int, np.ndarray]) -> np.ndarray:
    """``array`` taken at the kept positions ``axes[axis]`` of each listed axis, in axis order."""
    for axis, kept in sorted(axes.items()):
        array = np.take(array, kept, axis=axis)
    return array


def sliced(tensor: ir.TensorProtocol, axes: Mapping[int, np.ndarray],
           name: str | None) -> ir.TensorProtocol:  # fmt: skip
    """The tensor taken at the kept positions ``axes[axis]`` of each listed axis: computed now
    for a tensor in memory, a ``Sliced`` for a mapped one."""
    if not mapped(tensor):
        return ir.Tensor(np.ascontiguousarray(take_kept(tensor.numpy(), axes)), name=name)
    return Sliced(tensor, axes, name)
