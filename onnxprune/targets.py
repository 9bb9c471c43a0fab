"""The target search: the allocation share whose rewritten model keeps a target fraction of
the original's MACs, parameters or onnxruntime latency.

Rule: the share is bisected (``allocation.search_ratio``); each candidate plan is rewritten
without the checker and measured: MACs and parameters counted on its weightless skeleton at
the decided input sizes, latency timed in onnxruntime (alternating blocks) on one random feed
at those sizes against the original's. A target no share reaches gives the largest share and
a warning saying what it keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx_ir as ir

from onnxprune.allocation import search_ratio
from onnxprune.input_sizes import random_inputs
from onnxprune.latency import measure_latency
from onnxprune.metrics import ModelCost, rewritten_cost
from onnxprune.passes.cleanup import drop_intermediate_shapes
from onnxprune.plan import RemovalPlan
from onnxprune.rewrite import rewrite

#: Candidate shares tried by the bisection (one more than its steps).
SEARCH_STEPS = 13


def kept_measure(original: ir.Model, dims: dict, cost: ModelCost, kind: str,
             providers: Sequence[str] | None) -> Callable[[ir.Model], float]:  # fmt: skip
    """Kept fraction of ``kind`` (macs, params, latency) of a candidate model, rewritten with
    ``keep_shapes`` (its intermediate shapes are cleared by the measure)."""
    if kind == "macs":
        return lambda m: rewritten_cost(m, dims).macs / max(cost.macs, 1)
    if kind == "params":
        return lambda m: rewritten_cost(m, dims).params / max(cost.params, 1)
    feed = random_inputs(original, dims)
    (base,) = measure_latency([original], feed, repeats=20, blocks=2, providers=providers)

    def latency(m: ir.Model) -> float:
        drop_intermediate_shapes(m, keep_custom=False)
        return measure_latency([m], feed, repeats=20, blocks=2,
                               providers=providers)[0].median_ms / max(base.median_ms, 1e-9)

    return latency


def search_share(original: ir.Model, plan_for: Callable[[float], RemovalPlan], kind: str,
                 target: float, dims: dict, cost: ModelCost,
                 providers: Sequence[str] | None = None,
                 step: Callable[[int, int], None] | None = None,
                 reached: dict[float, float] | None = None) -> tuple[float, list[str]]:  # fmt: skip
    """(share, warnings): the smallest share whose candidate keeps at most ``target`` of
    ``kind``; ``reached`` is filled with the kept fraction of every share tried."""
    measure = kept_measure(original, dims, cost, kind, providers)
    reached = {} if reached is None else reached

    def kept_fraction(share: float) -> float:
        if step is not None:
            step(len(reached) + 1, SEARCH_STEPS)
        reached[share] = measure(rewrite(original, plan_for(share), check=False,
                                         keep_shapes=True))
        return reached[share]

    share = search_ratio(kept_fraction, target)
    if step is not None:
        step(SEARCH_STEPS, SEARCH_STEPS)
    warnings = []
    if reached.get(share, 0.0) > target:
        warnings.append(f"target {target:g} is out of reach: removing the most this allows "
                        f"(ratio {share:.2f}) keeps {reached[share]:.1%}")  # fmt: skip
    return share, warnings
