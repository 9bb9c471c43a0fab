"""The accuracy asserts fail on a regressed figure and pass on the README's."""

from __future__ import annotations

from pathlib import Path

import pytest

from accuracy import FIGURES, check_accuracy


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_figure_one_margin_below_the_readme_fails(name):
    figure, margin, _ = FIGURES[name]
    check_accuracy(name, figure)
    check_accuracy(name, figure - margin)
    with pytest.raises(AssertionError, match="the README says"):
        check_accuracy(name, figure - margin - 1e-3)
    assert 0 < margin <= 0.01  # a margin of a couple of samples, not a blanket allowance


def test_the_readme_lists_every_figure_as_the_tests_assert_it():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for figure, margin, what in FIGURES.values():
        assert f"| {what} | {figure:.2%} | {figure - margin:.2%} |" in readme, what
