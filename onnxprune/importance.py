"""Importance of every canonical channel of a group, from weight magnitudes.

A channel's score aggregates over every weight tensor in the group: for each member that is
an initializer, the slice at each of its positions contributes its L1 norm (``l1``) or
squared L2 norm (``l2``, square-rooted after summing), and positions of one canonical channel
add up (as Torch-Pruning's group magnitude importance). Scores are divided by the group's
mean so they compare across groups.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxprune.analysis import Analysis
from onnxprune.errors import UsageError
from onnxprune.groups import Group

Criterion = Callable[[Analysis, Group], np.ndarray]
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str) -> Callable[[Criterion], Criterion]:
    def register(fn: Criterion) -> Criterion:
        if name in CRITERIA:
            raise ValueError(f"importance criterion '{name}' registered twice")
        CRITERIA[name] = fn
        return fn

    return register


def _weight_norms(analysis: Analysis, group: Group, power: int) -> np.ndarray:
    total = np.zeros(group.n_atoms)
    initializers = analysis.model.graph.initializers
    for dim, atom_of in group.atom_of.items():
        value = initializers.get(dim.tensor)
        if value is None or value.const_value is None:
            continue
        array = value.const_value.numpy()
        if array.dtype.kind != "f" or array.ndim == 0:
            continue
        rows = np.moveaxis(array.astype(np.float64), dim.axis, 0).reshape(array.shape[dim.axis], -1)
        per_position = np.abs(rows).sum(axis=1) if power == 1 else np.square(rows).sum(axis=1)
        total += np.bincount(atom_of, weights=per_position, minlength=group.n_atoms)
    return total if power == 1 else np.sqrt(total)


@criterion("l1")
def l1(analysis: Analysis, group: Group) -> np.ndarray:
    """Sum of |w| over every weight slice of the channel."""
    return _weight_norms(analysis, group, 1)


@criterion("l2")
def l2(analysis: Analysis, group: Group) -> np.ndarray:
    """L2 norm over every weight slice of the channel."""
    return _weight_norms(analysis, group, 2)


@criterion("random")
def random(analysis: Analysis, group: Group) -> np.ndarray:
    """A seeded random score per channel (a baseline)."""
    return np.random.default_rng(group.id).random(group.n_atoms)


def score_groups(analysis: Analysis, groups: list[Group], name: str) -> dict[int, np.ndarray]:
    """Normalised scores of every prunable group's canonical channels."""
    if name not in CRITERIA:
        raise UsageError(f"unknown criterion '{name}'; choose one of {sorted(CRITERIA)}")
    scores: dict[int, np.ndarray] = {}
    for group in groups:
        if not group.prunable or group.n_atoms == 0:
            continue
        raw = CRITERIA[name](analysis, group)
        mean = raw.mean()
        scores[group.id] = raw / mean if mean > 0 else raw
    return scores
