"""Choosing what to remove.

``--ratio R`` removes fraction R of each prunable group's canonical channels (as
Torch-Pruning's ``pruning_ratio``), lowest scores first. The ratio applies to each *class* of
a group's channels: channels that appear in the same member tensors (one class in a plain
conv chain; one per branch where a Concat or a packed QKV projection joins several), so no
member ever loses all its channels and every branch shrinks alike. Kept counts are at least
``min_channels`` channels and, with ``round_to`` N, a multiple of N channels (a head or
grouped-conv block counts as its channel width). ``exclude`` patterns (names or globs) keep
every group that touches a matching node or tensor. A global target (``target_macs`` F keeps
fraction F of the original MACs) is met by searching the uniform ratio.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence

import numpy as np

from onnxprune.analysis import Analysis
from onnxprune.errors import UsageError
from onnxprune.groups import Group


def group_names(analysis: Analysis, group: Group) -> set[str]:
    """Names a user may exclude a group by: member tensors and the nodes touching them."""
    names: set[str] = set()
    for dim in group.atom_of:
        names.add(dim.tensor)
        value = analysis.value(dim.tensor)
        if value is None:
            continue
        producer = value.producer()
        if producer is not None:
            names.add(producer.name)
        names.update(node.name for node, _ in value.uses())
    return names


def excluded_groups(analysis: Analysis, groups: list[Group], patterns: Sequence[str]) -> set[int]:
    """Ids of groups matched by ``patterns``; a pattern matching nothing is a usage error."""
    if not patterns:
        return set()
    everything = set(analysis.values) | {n.name for n in analysis.model.graph}
    for pattern in patterns:
        if not fnmatch.filter(everything, pattern):
            raise UsageError(
                f"--exclude '{pattern}' matches no node or tensor of the model; "
                "run `onnxprune analyze MODEL` to see the names"
            )
    out = set()
    for group in groups:
        names = group_names(analysis, group)
        if any(fnmatch.filter(names, p) for p in patterns):
            out.add(group.id)
    return out


def kept_atoms(group: Group, ratio: float, round_to: int = 1, min_channels: int = 1,
               n: int | None = None, offset: float | None = None) -> int:  # fmt: skip
    """How many canonical channels of ``group`` (or of a class of ``n`` of them) stay.

    With ``round_to``, the count is rounded up to a multiple of it; with ``offset`` u in
    [0, 1), to ``floor(count / step + u)`` steps instead (at least one, and at least
    ``min_channels``), which is the count on average over u spread evenly."""
    n, width = group.n_atoms if n is None else n, group.atom_size
    need = math.ceil(min_channels / width)
    keep = max(1, n - math.floor(n * ratio + 1e-9), need)
    if round_to > 1:
        step = round_to // math.gcd(round_to, width)
        blocks = math.ceil(keep / step) if offset is None else max(1, math.floor(keep / step + offset))
        keep = max(blocks, math.ceil(need / step)) * step
    return min(keep, n)


#: The fractional part of multiples of this spreads offsets evenly over [0, 1).
_GOLDEN = (math.sqrt(5) - 1) / 2


def allocate_ratio(
    groups: list[Group],
    scores: dict[int, np.ndarray],
    ratio: float,
    *,
    round_to: int = 1,
    min_channels: int = 1,
    skip: set[int] | None = None,
    spread: bool = False,
) -> dict[int, np.ndarray]:
    """Remove the lowest-scored ``ratio`` of each scored group's channels.

    ``spread`` (with ``round_to``, for a searched target): the k-th class counted over all
    groups rounds with offset ``frac(k x 0.618...)`` (``kept_atoms``) instead of up, so the
    kept share falls one class at a time as the ratio grows and a target is met closely;
    rounding every class up moves classes of one width together (densenet121's 32-channel
    concat branches keep 32 or 16 channels: a 50% MACs target landed at 26%)."""
    if not 0.0 <= ratio < 1.0:
        raise UsageError(f"--ratio must be in [0, 1), got {ratio}")
    if round_to < 1 or min_channels < 1:
        raise UsageError("--round-to and --min-channels must be at least 1")
    removed: dict[int, np.ndarray] = {}
    k = 0
    for group in groups:
        if group.id not in scores or (skip and group.id in skip):
            continue
        gone = []
        for atoms in channel_classes(group):
            k += 1
            offset = (k * _GOLDEN) % 1.0 if spread else None
            keep = kept_atoms(group, ratio, round_to, min_channels, n=atoms.size, offset=offset)
            if keep < atoms.size:
                order = np.argsort(scores[group.id][atoms], kind="stable")
                gone.append(atoms[order[: atoms.size - keep]])
        if gone:
            removed[group.id] = np.sort(np.concatenate(gone))
    return removed


def channel_classes(group: Group) -> list[np.ndarray]:
    """The group's canonical channels partitioned by the set of members they appear in (a
    member holding every channel splits none)."""
    partial = []
    for atoms in group.atom_of.values():
        if atoms.size < group.n_atoms or not np.bincount(atoms, minlength=group.n_atoms).all():
            partial.append(atoms)
    if not partial:
        return [np.arange(group.n_atoms)] if group.n_atoms else []
    members = np.zeros((group.n_atoms, len(partial)), dtype=bool)
    for j, atoms in enumerate(partial):
        members[atoms, j] = True
    if len(partial) < 63:  # a row as one integer, the first member its highest bit (the
        # integers sort as the rows do): the same classes in the same order, 10x faster
        bits = np.left_shift(1, np.arange(len(partial) - 1, -1, -1, dtype=np.int64))
        _, label = np.unique(members @ bits, return_inverse=True)
    else:
        _, label = np.unique(members, axis=0, return_inverse=True)
    label = label.reshape(-1)
    return [np.flatnonzero(label == k) for k in range(int(label.max()) + 1)] if label.size else []


def search_ratio(
    kept_fraction: Callable[[float], float], target: float, *, steps: int = 12, hi: float = 0.95
) -> float:
    """Smallest uniform ratio whose kept fraction is at most ``target`` (bisection)."""
    if not 0.0 < target <= 1.0:
        raise UsageError(f"target fraction must be in (0, 1], got {target}")
    lo = 0.0
    if kept_fraction(hi) > target:
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if kept_fraction(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi
