"""Positions joined into atoms: each position's label is the smallest position its component
holds (what ``groups`` numbers atoms by), as networkx finds the components."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from onnxprune.groups import _smallest_connected


@pytest.mark.parametrize("seed", range(6))
def test_each_position_is_labelled_with_the_smallest_of_its_component(seed):
    rng = np.random.default_rng(seed)
    total = int(rng.integers(1, 400))
    pairs = int(rng.integers(0, total))
    r, c = rng.integers(0, total, pairs), rng.integers(0, total, pairs)
    graph = nx.Graph()
    graph.add_nodes_from(range(total))
    graph.add_edges_from(zip(r.tolist(), c.tolist(), strict=True))
    want = np.empty(total, np.int64)
    for component in nx.connected_components(graph):
        want[list(component)] = min(component)
    assert np.array_equal(_smallest_connected(r, c, total), want)


def test_a_long_chain_joins_end_to_end():
    n = 1000
    r = np.arange(n - 1)[::-1].copy()  # pairs (k, k + 1), the far end first
    assert np.array_equal(_smallest_connected(r, r + 1, n), np.zeros(n, np.int64))
