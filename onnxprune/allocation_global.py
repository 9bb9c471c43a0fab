"""Global allocation: one threshold over scores compared across groups.

Scores are normalised per group by their mean (:func:`importance.score_groups`), so a channel
scoring 0.2 is a fifth as important as its group's average wherever it sits. ``fraction`` F
removes the F share of all eligible canonical channels with the lowest normalised scores,
model-wide, so groups whose channels matter less lose more. Each channel class (see
:func:`allocation.channel_classes`) keeps at least ``min_channels`` channels and at least
``1 - max_share`` of its channels (no group is emptied or nearly emptied), rounded up to
``round_to``. Heads and blocks count as one unit each.

Scores of a ``COMPARABLE`` criterion (``obs``: the squared error a channel's removal leaves,
in one unit model-wide) are not normalised, and are ranked per MAC instead (``costs``: each
group's MACs per channel, the MACs of the nodes touching its tensors over its channel count,
as :func:`~onnxprune.allocation_latency.channel_costs` sums kernel times): the error bought
per MAC saved, so a head costing 75 MLP neurons' MACs must be 75 times as expendable.
``fraction`` is then the share of the summed channel MACs removed. Normalised scores are not
ranked per MAC: they say nothing of a channel's absolute worth, and per MAC they strip the
costliest layers to their floors (digits CNN at 30% of MACs: 14.7% accuracy, against 97.8%
per channel).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from onnxprune.allocation import channel_classes, kept_atoms
from onnxprune.errors import UsageError
from onnxprune.groups import Group

#: No class loses more than this share of its channels under global allocation.
MAX_SHARE = 0.9


def allocate_global(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    fraction: float,
    *,
    round_to: int = 1,
    min_channels: int = 1,
    max_share: float = MAX_SHARE,
    skip: set[int] | None = None,
    costs: Mapping[int, float] | None = None,
) -> dict[int, np.ndarray]:
    """Removed canonical channels per group: the lowest-scored ``fraction`` of all of them,
    or, with ``costs`` (MACs per channel of each group), the lowest score per MAC until
    ``fraction`` of the summed costs is gone."""
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"global fraction must be in [0, 1), got {fraction}")
    if costs is not None:
        return per_cost(groups, scores, fraction, costs, round_to=round_to,
                        min_channels=min_channels, max_share=max_share, skip=skip)
    return cheapest_first(groups, scores, fraction, lambda gid: 1.0, whole=True,
                          round_to=round_to, min_channels=min_channels, max_share=max_share,
                          skip=skip)  # fmt: skip


def per_cost(groups: list[Group], scores: dict[int, np.ndarray], fraction: float,
             costs: Mapping[int, float], *, round_to: int, min_channels: int, max_share: float,
             skip: set[int] | None) -> dict[int, np.ndarray]:  # fmt: skip
    """Removed atoms per group: the lowest score per unit of ``costs`` (each group's cost per
    channel: MACs for ``global``, milliseconds for ``latency``) first, until ``fraction`` of
    the summed costs is gone."""
    return cheapest_first(groups, scores, fraction, lambda gid: max(costs.get(gid, 0.0), 1e-9),
                          whole=False, round_to=round_to, min_channels=min_channels,
                          max_share=max_share, skip=skip)  # fmt: skip


def cheapest_first(groups: list[Group], scores: dict[int, np.ndarray], fraction: float,
                   cost: Callable[[int], float], *, whole: bool, round_to: int,
                   min_channels: int, max_share: float,
                   skip: set[int] | None) -> dict[int, np.ndarray]:  # fmt: skip
    """Removed atoms per group: every eligible channel ranked by its score / ``cost(group)``,
    the lowest taken until ``fraction`` of the total cost is gone (``whole``: a whole number
    of unit-cost channels, rounded down), no class below its floor (``kept_atoms`` at
    ``max_share``), then rounded per class (``rounded_removal``)."""
    candidates: list[tuple[float, int, int, int]] = []  # score per cost, group, class, atom
    floors: dict[tuple[int, int], int] = {}
    sizes: dict[tuple[int, int], int] = {}
    total = 0.0
    for group in groups:
        if group.id not in scores or (skip and group.id in skip):
            continue
        unit = cost(group.id)
        for c, atoms in enumerate(channel_classes(group)):
            floors[(group.id, c)] = kept_atoms(group, max_share, round_to, min_channels,
                                               n=atoms.size)  # fmt: skip
            sizes[(group.id, c)] = atoms.size
            candidates += [(float(scores[group.id][a]) / unit, group.id, c, int(a))
                           for a in atoms]  # fmt: skip
            total += unit * atoms.size
    budget = math.floor(total * fraction + 1e-9) if whole else total * fraction
    candidates.sort(key=lambda t: (t[0], t[1], t[3]))
    chosen: dict[tuple[int, int], list[int]] = {}
    for _, gid, c, atom in candidates:
        if budget <= 1e-12:
            break
        gone = chosen.setdefault((gid, c), [])
        if sizes[(gid, c)] - len(gone) > floors[(gid, c)]:
            gone.append(atom)
            budget -= cost(gid)
    return rounded_removal(groups, chosen, sizes, round_to)


def rounded_removal(groups: list[Group], chosen: dict[tuple[int, int], list[int]],
                    sizes: dict[tuple[int, int], int], round_to: int) -> dict[int, np.ndarray]:  # fmt: skip
    """Removed atoms per group from the atoms ``chosen`` per (group, channel class), in the
    order chosen: each class keeps a multiple of ``round_to`` channels, the first chosen
    going first (rounding keeps the best of those chosen)."""
    by_id = {g.id: g for g in groups}
    removed: dict[int, list[int]] = {}
    for (gid, c), gone in chosen.items():
        keep = _rounded_keep(by_id[gid], sizes[(gid, c)] - len(gone), sizes[(gid, c)], round_to)
        drop = sizes[(gid, c)] - keep
        if drop > 0:
            removed.setdefault(gid, []).extend(gone[:drop])
    return {gid: np.sort(np.asarray(atoms, dtype=np.int64)) for gid, atoms in removed.items()}


def _rounded_keep(group: Group, keep: int, n: int, round_to: int) -> int:
    """``keep`` rounded up so the kept width is a multiple of ``round_to`` (as uniform)."""
    if round_to > 1:
        step = round_to // math.gcd(round_to, group.atom_size)
        keep = math.ceil(keep / step) * step
    return min(keep, n)
