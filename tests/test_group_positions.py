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


@pytest.mark.parametrize("dw_out", [8, 16])
def test_factor_groups_number_channels_as_the_joined_positions_do(monkeypatch, dw_out):
    """A depthwise Conv (a factor beside 1s: position p is p) takes the identity path, a
    channel multiplier (16 outputs from 8 groups) the joined positions; either way every
    group's channels are what joining the positions gives."""
    from onnx import helper

    import onnxprune
    from graphs import conv, model, weight
    from onnxprune import groups

    nodes = [conv("c1", "x", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("dw", "r", "w2", "b2", "d", group=8),
             conv("c3", "d", "w3", None, "y")]  # fmt: skip
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(dw_out, 1, 3, 3),
             "b2": weight(dw_out), "w3": weight(5, dw_out, 1, 1)}  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 5, 4, 4]}, inits)
    fast = onnxprune.analyze(proto).groups
    monkeypatch.setattr(groups, "_identity_width", lambda *args: None)
    joined = onnxprune.analyze(proto).groups
    assert [g.n_atoms for g in fast] == [g.n_atoms for g in joined]
    for a, b in zip(fast, joined, strict=True):
        assert a.atom_of.keys() == b.atom_of.keys()
        assert all(np.array_equal(a.atom_of[d], b.atom_of[d]) for d in a.atom_of)
    assert any(len(g.atom_of) > 3 and g.prunable for g in fast)
