"""onnxruntime latency, measured fairly.

Models are timed in alternating blocks (A, B, A, B, ...) after a warm-up, so drift in the
machine's speed affects all of them alike; the median of all runs is reported. Intra-op
threads do not spin-wait: an idle session's spinning threads would otherwise steal cores from
the session being timed (measured: up to 2x error on a 2-core machine).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.sessions import open_session


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
    return open_session(model, optimization="all", threads=threads, providers=providers,
                        spinning=False)


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
