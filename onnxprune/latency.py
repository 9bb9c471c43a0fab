"""onnxruntime latency, measured fairly, and random feeds from declared input shapes.

Models are timed in alternating blocks (A, B, A, B, ...) after a warm-up, so drift in the
machine's speed affects all of them alike; the median of all runs is reported. Intra-op
threads do not spin-wait: an idle session's spinning threads would otherwise steal cores from
the session being timed (measured: up to 2x error on a 2-core machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.metrics import Dims, dim_size
from onnxprune.model_io import runtime_bytes

_NUMPY = {
    ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16,
    ir.DataType.DOUBLE: np.float64, ir.DataType.INT32: np.int32, ir.DataType.INT64: np.int64,
    ir.DataType.BOOL: np.bool_,
}  # fmt: skip


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per run of one model."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _session(model, threads: int, providers) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(runtime_bytes(model), options, providers=providers or ["CPUExecutionProvider"])


def measure_latency(
    models: Sequence[str | bytes | onnx.ModelProto | ir.Model],
    inputs: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 30,
    blocks: int = 5,
    providers: Sequence[str] | None = None,
) -> list[LatencyStats]:
    """Median latency of each model; ``inputs`` is one feed for all or one per model."""
    sessions = [_session(m, threads, providers) for m in models]
    feeds = [dict(inputs)] * len(models) if isinstance(inputs, Mapping) else [dict(f) for f in inputs]
    for s, feed in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            s.run(None, feed)
    per_block = max(1, repeats // blocks)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(blocks):
        for k, (s, feed) in enumerate(zip(sessions, feeds, strict=True)):
            for _ in range(per_block):
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t) * 1e3)
    return [
        LatencyStats(float(np.median(t)), float(np.percentile(t, 10)), float(np.percentile(t, 90)),
                     float(np.mean(t)), len(t))
        for t in times
    ]


def declared_inputs(model: ir.Model) -> dict[str, ir.Value]:
    """The graph inputs a caller must feed (not those that double as initializers)."""
    initializers = set(model.graph.initializers)
    return {v.name: v for v in model.graph.inputs if v.name not in initializers}


def bound_shape(value: ir.Value, dims: Dims, default: Callable[[int], int]) -> list[int]:
    """``value``'s declared shape, symbolic axis k sized by ``dims`` (``metrics.Dims``), else
    ``default(k)``."""
    return [d if isinstance(d, int) else dim_size(dims, value.name, k, d.value or "", default(k))
            for k, d in enumerate(value.shape or [])]  # fmt: skip


def fed_dims(model: ir.Model, dims: Dims, feed: Mapping[str, np.ndarray] | None) -> dict:
    """``dims`` plus the whole shape of each input in ``feed`` that has symbolic axes (sized
    by ``dims`` where it names them, else as fed), so costs count at the sizes that run."""
    out = dict(dims)
    for name, value in declared_inputs(model).items():
        shape = value.shape
        if feed is None or name in dims or name not in feed or shape is None:
            continue
        fed = np.shape(feed[name])
        if len(fed) == len(shape) and not all(isinstance(d, int) for d in shape):
            out[name] = tuple(bound_shape(value, dims, lambda k, fed=fed: fed[k]))
    return out


def bound_input_shapes(model: ir.Model, dims: Dims) -> tuple[dict[str, list[int]], list[str]]:
    """Each declared input's shape with ``dims`` bound (open symbolic axes 1), and the inputs
    with an open axis after the first (a batch of 1 is the usual count; a height of 1 is not)."""
    shapes: dict[str, list[int]] = {}
    open_axes: list[str] = []
    for name, value in declared_inputs(model).items():
        if value.shape is None:
            continue
        sizes = bound_shape(value, dims, lambda k: 0)  # 0: left open
        pairs = list(zip([not isinstance(d, int) for d in value.shape], sizes, strict=True))
        if any(symbolic and not size for symbolic, size in pairs[1:]):
            open_axes.append(name)
        shapes[name] = [(size or 1) if symbolic else size for symbolic, size in pairs]
    return shapes, open_axes


def random_inputs(
    model: onnx.ModelProto | ir.Model,
    dims: Dims | None = None,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A feed for every declared graph input: floats ~ N(0, 1), integers in {0, 1} (valid token
    ids, attention masks and indices alike), bools.

    Symbolic dims take their value from ``dims`` (an input's whole shape or a dim name, as in
    ``metrics.Dims``), else ``batch`` for the first axis and 1 elsewhere.
    """
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    dims = dict(dims or {})
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for value in declared_inputs(model).values():
        shape = bound_shape(value, dims, lambda k: batch if k == 0 else 1)
        dtype = _NUMPY.get(value.dtype, np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feed[value.name] = rng.random(shape) < 0.5
        else:
            feed[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return feed
