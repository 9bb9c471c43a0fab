"""Per-channel activation statistics, streamed from onnxruntime runs.

For every requested (tensor, axis) the tensor becomes an extra graph output; each calibration
batch is run and reduced at once to per-channel count, sum, sum of squares and sum of
absolute values (float64), and where asked the channel Gram matrix, so no activation
outlives its batch. Tensors are requested at
most ``chunk`` at a time (a large model is run once per chunk over the same batches), which
bounds the extra outputs held per run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.calibration import Feed
from onnxprune.graph_values import all_values
from onnxprune.sessions import with_outputs
from onnxprune.skeleton import skeleton

Key = tuple[str, int]


@dataclass
class ChannelStats:
    """Running sums over every element of one channel (all samples, all other axes)."""

    count: int
    sum: np.ndarray
    sum_sq: np.ndarray
    sum_abs: np.ndarray
    #: sum of x xᵀ over channels (C x C), kept only where requested (refit)
    gram: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.sum_sq / max(self.count, 1) - self.mean**2, 0.0)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.sum_abs / max(self.count, 1)

    def add(self, x: np.ndarray, axis: int, mask: np.ndarray | None = None) -> None:
        rows = channel_rows(x, axis, mask)
        self.count += rows.shape[1]
        self.sum += rows.sum(axis=1)
        self.sum_sq += np.square(rows).sum(axis=1)
        self.sum_abs += np.abs(rows).sum(axis=1)
        if self.gram is not None:
            self.gram += rows @ rows.T


def channel_rows(x: np.ndarray, axis: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``x`` as (channels along ``axis``) x (positions), float64. With ``mask`` (the
    calibration's valid-position marker, e.g. an attention mask of shape (batch, sequence)):
    where ``x``'s leading axes are the mask's shape and the channel axis is not among them,
    only the positions the mask marks nonzero count (padding stays out of the statistics);
    any other tensor counts every position."""
    if (mask is not None and x.shape[: mask.ndim] == mask.shape and axis >= mask.ndim
            and mask.ndim > 0):  # fmt: skip
        x = x[mask.astype(bool)]  # (valid positions, *rest)
        axis = axis - mask.ndim + 1
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)


def _session(model: ir.Model, names: list[str],
             providers: Sequence[str] | None) -> ort.InferenceSession:  # fmt: skip
    # Extra outputs pin intermediate tensors; basic optimisation keeps their names intact.
    return with_outputs(model, names, optimization="basic", threads=0, providers=providers)


def collect_statistics(
    model: ir.Model,
    keys: Iterable[Key],
    batches: Iterable[Feed] | Callable[[], Iterable[Feed]],
    *,
    providers: Sequence[str] | None = None,
    chunk: int = 128,
    gram: Iterable[Key] = (),
    mask: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Key, ChannelStats]:
    """Statistics of every float (tensor, axis) in ``keys`` over ``batches``; for keys in
    ``gram`` also the channel Gram matrix (memory: channels² per key); ``mask``: the input
    of each feed marking its valid positions (:func:`channel_rows`).

    ``batches`` may be a function returning a fresh iterable: it is then called once per
    chunk and never held in memory (peak memory independent of the sample count); a plain
    iterable is kept in a list when more than one chunk needs it."""
    gram = set(gram)
    values = all_values(model.graph)
    outputs = {v.name for v in model.graph.outputs}
    types = {n: int(v.dtype) for n, v in values.items() if v.dtype is not None}
    if any(t in values and t not in types for t, _ in keys):
        inferred = onnx.shape_inference.infer_shapes(skeleton(model))
        types |= {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info
                  if v.name not in types and v.type.tensor_type.elem_type}  # fmt: skip
    wanted: dict[str, list[int]] = {}
    weights = set(model.graph.initializers)  # a consumer reading a weight (LSTM's R) has no data
    # only main-graph values can become extra outputs (not those inside If branches)
    reachable = {v.name for v in model.graph.inputs} | {
        v.name for node in model.graph for v in node.outputs if v is not None}
    for tensor, axis in keys:
        if (tensor in types and tensor not in weights and tensor in reachable
                and ir.DataType(types[tensor]).is_floating_point()):  # fmt: skip
            wanted.setdefault(tensor, []).append(axis)
    names = sorted(wanted)
    stats: dict[Key, ChannelStats] = {}
    chunks = [names[i : i + chunk] for i in range(0, len(names), chunk)] or [[]]
    if callable(batches):
        source = batches
    else:
        kept = batches if len(chunks) == 1 else list(batches)
        source = lambda: kept  # noqa: E731
    done = 0
    for part in chunks:
        for name in part:
            if values[name].dtype is None:  # the output needs its type
                values[name].dtype = ir.DataType(types[name])
        session = _session(model, [n for n in part if n not in outputs], providers)
        for feed in source():
            arrays = dict(zip(part, session.run(part, feed), strict=True)) if part else {}
            for name, array in arrays.items():
                for axis in wanted[name]:
                    key = (name, axis % array.ndim)
                    if key not in stats:
                        n = array.shape[key[1]]
                        stats[key] = ChannelStats(0, np.zeros(n), np.zeros(n), np.zeros(n),
                                                  np.zeros((n, n)) if key in gram else None)
                    stats[key].add(array, key[1], None if mask is None else feed[mask])
            done += 1
            if progress is not None:
                progress(done, 0)
    return stats
