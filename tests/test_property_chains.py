"""Property: for random conv chains (widths, groups, residuals) and ratios, the oracle holds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import onnxprune
from graphs import conv, feeds, model, weight


@st.composite
def chains(draw):
    depth = draw(st.integers(2, 4))
    width = draw(st.sampled_from([4, 6, 8, 12]))
    nodes, inits, prev, cin = [], {}, "x", 3
    for k in range(depth):
        groups = draw(st.sampled_from([1, 2, width])) if k > 0 else 1
        w = f"w{k}"
        inits[w] = weight(width, cin // groups, 1, 1, seed=k)
        inits[f"b{k}"] = weight(width, seed=100 + k)
        nodes.append(conv(f"c{k}", prev, w, f"b{k}", f"a{k}", group=groups))
        out = f"a{k}"
        if k > 0 and draw(st.booleans()):
            nodes.append(helper.make_node("Add", [prev, out], [f"s{k}"], name=f"res{k}"))
            out = f"s{k}"
        nodes.append(helper.make_node("Relu", [out], [f"r{k}"], name=f"relu{k}"))
        prev, cin = f"r{k}", width
    inits["wy"] = weight(2, width, 1, 1, seed=99)
    nodes.append(conv("cy", prev, "wy", None, "y"))
    return model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.floats(0.0, 0.9), st.sampled_from(["l1", "l2", "random"]))
def test_pruned_equals_masked_for_random_chains(proto, ratio, criterion):
    result = onnxprune.prune(proto, ratio=ratio, criterion=criterion, inputs=feeds(proto, n=1))
    assert result.verification.passed
    assert result.cost_after.params <= result.cost_before.params
