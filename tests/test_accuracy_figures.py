"""The accuracy asserts fail on a regressed figure and pass on the README's."""

from __future__ import annotations

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
