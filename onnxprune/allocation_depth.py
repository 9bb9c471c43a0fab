"""Depth allocation: which residual branches to drop, alone or together with width.

Rules (blocks are taken in their removal order, least important first):

- a count ``n``: the first ``n`` blocks;
- depth only, to a target: the fewest first blocks whose model keeps at most the target
  fraction (bisection on the count; the kept fraction falls as blocks go). A target no count
  reaches gives every block and a warning;
- combined, to a target: candidate depths from 0 (width only) to the depth-only count (depth
  only), at most ``CANDIDATES`` of them evenly spaced; each gets the width share that reaches
  the target with its blocks dropped, and its corrections (refit, compensation: without them
  width would be judged worse than it is written), and the candidate whose outputs change
  least on the feeds (``block_scores.output_change`` against the original) wins. Width only and depth only
  are always candidates, so on those feeds the plan is at least as close to the original as
  the better of the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.block_scores import output_change
from onnxprune.blocks import Block
from onnxprune.groups import Group
from onnxprune.plan import RemovalPlan
from onnxprune.sessions import open_session

#: Depths tried by the combined search (width only and depth only among them).
CANDIDATES = 6


def inside(groups: Sequence[Group], dropped: Sequence[Block]) -> set[int]:
    """Ids of the groups whose every consumer lies in a dropped branch (pruning them would
    change nothing that is left)."""
    nodes = {n for b in dropped for n in b.nodes}
    return {g.id for g in groups if g.consumers and all(c.node in nodes for _, c in g.consumers)}


def fewest_blocks(kept_with: Callable[[int], float], count: int,
                  target: float) -> tuple[int, list[str]]:  # fmt: skip
    """(the fewest first blocks whose model keeps at most ``target``, warnings)."""
    if count == 0:
        return 0, [f"target {target:g}: the model has no removable block"]
    reached = {count: kept_with(count)}
    if reached[count] > target:
        return count, [f"target {target:g} is out of reach by depth alone: dropping all "
                       f"{count} blocks keeps {reached[count]:.1%}"]  # fmt: skip
    low, high = 0, count  # kept(low) > target (or low = 0), kept(high) <= target
    while high - low > 1:
        mid = (low + high) // 2
        reached[mid] = kept_with(mid)
        if reached[mid] <= target:
            high = mid
        else:
            low = mid
    return high, []


def candidate_depths(depth_only: int) -> list[int]:
    """Depths the combined search tries: 0 .. ``depth_only``, at most ``CANDIDATES``."""
    if depth_only <= CANDIDATES - 1:
        return list(range(depth_only + 1))
    return sorted({int(round(x)) for x in np.linspace(0, depth_only, CANDIDATES)})


class OutputError:
    """Mean ``output_change`` of candidate models against the original on ``feeds``."""

    def __init__(self, original: ir.Model, feeds: Sequence[dict],
                 providers: Sequence[str] | None = None) -> None:  # fmt: skip
        self.feeds, self.providers = list(feeds), providers
        session = open_session(original, providers=providers)
        self.names = [o.name for o in session.get_outputs()]
        self.reference = [session.run(self.names, dict(f)) for f in self.feeds]

    def __call__(self, model: ir.Model) -> float:
        session = open_session(model, providers=self.providers)
        runs = [session.run(self.names, dict(f)) for f in self.feeds]
        return float(np.mean([output_change(e, a)
                              for e, a in zip(self.reference, runs, strict=True)]))  # fmt: skip


def combined(depths: Sequence[int], plan_at: Callable[[int], RemovalPlan],
             error: Callable[[RemovalPlan], float],
             step: Callable[[int, int], None] | None = None,
             ) -> tuple[RemovalPlan, list[dict]]:  # fmt: skip
    """(the candidate plan of least output error, a row per candidate depth)."""
    rows, best = [], None
    for i, depth in enumerate(depths):
        plan = plan_at(depth)
        err = error(plan)
        rows.append({"blocks": depth, "width_groups": len(plan.removed), "output_change": err})
        if best is None or err < best[0]:
            best = (err, plan)
        if step is not None:
            step(i + 1, len(depths))
    assert best is not None
    return best[1], rows
