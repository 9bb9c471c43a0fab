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


def _unlisted(readme: str) -> list[str]:
    """The figures whose row (what, figure, the floor) the README's table does not hold."""
    return [what for figure, margin, what in FIGURES.values()
            if f"| {what} | {figure:.2%} | {figure - margin:.2%} |" not in readme]  # fmt: skip


def test_the_readme_lists_every_figure_as_the_tests_assert_it():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert _unlisted(readme) == []
    # a README still showing an old figure is caught
    figure, margin, what = FIGURES["digits_cnn_calibrated_30"]
    stale = readme.replace(f"| {what} | {figure:.2%} |", f"| {what} | {figure - 0.01:.2%} |")
    assert _unlisted(stale) == [what]
