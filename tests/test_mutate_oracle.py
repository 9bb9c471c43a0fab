"""The fast subset of tools/mutate_oracle.py: every injected rewrite bug that changes the
model's function is caught, and the correct prunes pass (no false alarm)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import mutate_oracle  # noqa: E402

CASES = mutate_oracle.cases(fast=True)


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle_catches_every_injected_bug(name):
    row = CASES[name]()
    verdicts = row["mutations"]
    print(name, verdicts)
    assert row["correct_prune_passes"]
    missed = [m for m, v in verdicts.items() if v is False]
    assert not missed, f"the oracle missed {missed} on {name}"
    assert sum(v is True for v in verdicts.values()) >= 2  # the mutations did apply
