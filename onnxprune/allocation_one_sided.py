"""One-sided allocation: a uniform ratio over a set of groups no two of which meet at a node
on opposite sides, so no contraction loses both its input and its output channels.

Why: a uniform ratio r over every group shrinks a Conv or MatMul on both sides, its MACs to
(1 - r)², while the memory-bound work beside it (depthwise convolutions, activations,
normalisations, element-wise sums: linear in the width) only falls to 1 - r; at a MACs target
the speedup then trails the MACs saved (50% of MACs at 224x224: efficientnet_b0 1.59x
speedup, 0.76 of the MACs ratio). When every pruned node loses one side only, its MACs and
its memory traffic fall alike, by the pruned share.

The set (:func:`one_sided_groups`): groups conflict when a node contracts one away (a
consumer of it) and produces the other; the set is a maximum-weight independent set of that
conflict graph, weight = the MACs of the nodes a group touches (+1, so a group touching no
MACs is taken where it conflicts with nothing), solved exactly as a 0/1 program by scipy's
MILP solver (a few dozen groups: milliseconds). A group that is its own consumer and producer
(a depthwise convolution keeps its channels) conflicts with nothing.

Allocation (:func:`allocate_one_sided`): ``allocate_ratio`` over the set, every other group
skipped; targets search the ratio as for ``uniform``. A target the set cannot reach is
searched again over every group (``api``, with a note). Like ``latency``, channel counts are
kept in multiples of onnxruntime's NCHWc block unless ``round_to`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.allocation import allocate_ratio
from onnxprune.groups import Group


def one_sided_groups(model: ir.Model, groups: list[Group],
                     macs: Mapping[str, int]) -> set[int]:  # fmt: skip
    """Ids of the maximum-MACs set of ``groups`` no two of which one node reads and writes
    (module docstring); ``macs`` are MACs by node name."""
    producer = {v.name: node.name for node in model.graph for v in node.outputs if v is not None}
    reads: dict[int, set[str]] = {}
    writes: dict[int, set[str]] = {}
    for group in groups:
        writes[group.id] = {producer[d.tensor] for d in group.produced if d.tensor in producer}
        reads[group.id] = {consumer.node for _, consumer in group.consumers}
    readers: dict[str, set[int]] = {}
    for gid, nodes in reads.items():
        for node in nodes:
            readers.setdefault(node, set()).add(gid)
    conflicts = sorted({(min(a, b), max(a, b)) for b, nodes in writes.items() for node in nodes
                        for a in readers.get(node, ()) if a != b})  # fmt: skip
    ids = [g.id for g in groups]
    weight = np.array([1 + sum(macs.get(n, 0) or 0 for n in reads[g] | writes[g]) for g in ids],
                      dtype=np.float64)  # fmt: skip
    if not conflicts:
        return set(ids)
    from scipy.optimize import Bounds, LinearConstraint, milp  # a heavy import, used here only

    column = {gid: i for i, gid in enumerate(ids)}
    pairs = np.zeros((len(conflicts), len(ids)))
    for row, (a, b) in enumerate(conflicts):
        pairs[row, column[a]] = pairs[row, column[b]] = 1
    solved = milp(-weight / weight.max(), integrality=np.ones(len(ids)), bounds=Bounds(0, 1),
                  constraints=LinearConstraint(pairs, -np.inf, 1))  # fmt: skip
    if solved.x is None:  # never for a 0/1 packing program (all zeros is feasible)
        raise RuntimeError(f"the one-sided set was not solved: {solved.message}")
    return {gid for gid in ids if solved.x[column[gid]] > 0.5}


def allocate_one_sided(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    ratio: float,
    *,
    chosen: set[int],
    round_to: int = 1,
    min_channels: int = 1,
    skip: set[int] | None = None,
    spread: bool = False,
) -> dict[int, np.ndarray]:
    """The lowest-scored ``ratio`` of each chosen group's channels (``allocate_ratio``);
    groups outside ``chosen`` keep all theirs."""
    others = {g.id for g in groups if g.id not in chosen}
    return allocate_ratio(groups, scores, ratio, round_to=round_to, min_channels=min_channels,
                          skip=(skip or set()) | others, spread=spread)  # fmt: skip
