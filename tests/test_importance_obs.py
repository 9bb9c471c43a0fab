"""The ``obs`` criterion (error left after the refit) and the global allocation's per-MAC
ranking of such comparable scores."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from test_allocation import mlp as two_layer_mlp

import onnxprune
from graphs import assert_exact, model, weight
from onnxprune.allocation_global import allocate_global
from onnxprune.channel_graph import Consumer
from onnxprune.importance import reader_weight_sq, score_groups
from onnxprune.importance_obs import join_of
from onnxprune.passes.refit import RIDGE
from onnxprune.statistics import collect_statistics


def mlp(w2: np.ndarray | None = None) -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2")]  # fmt: skip
    inits = {"w1": weight(5, 12, seed=1), "b1": weight(12, seed=2),
             "w2": weight(12, 3, seed=3) if w2 is None else w2}  # fmt: skip
    return model(nodes, {"x": ["batch", 5]}, {"y": ["batch", inits["w2"].shape[1]]}, inits)


def _surgeon_scores(r: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Greedy OBS by hand: one channel at a time (12 < STEPS), the score the running maximum."""
    g = r.T @ r / len(r)
    hinv = np.linalg.inv(g + RIDGE * np.trace(g) / len(g) * np.eye(len(g)))
    w, alive, scores, level = w.copy(), list(range(len(g))), np.zeros(len(g)), 0.0
    while len(alive) > 1:
        err = {j: w[j] @ w[j] / hinv[j, j] for j in alive}
        j = min(alive, key=err.get)
        level = max(level, err[j])
        scores[j] = level
        w -= np.outer(hinv[:, j], w[j]) / hinv[j, j]
        hinv -= np.outer(hinv[:, j], hinv[j]) / hinv[j, j]
        alive.remove(j)
    scores[alive[0]] = level * 1.01
    return scores


@pytest.mark.parametrize("outputs", [3, 20])  # the weight held as W, or as W Wᵀ (wider)
def test_obs_scores_are_the_greedy_surgeon_errors_over_the_output_energy(outputs):
    """fc2's output joins no stream: errors are shares of its own output energy tr(Wᵀ G W),
    so 10x the reader weights leaves the scores as they are (not normalised per group)."""
    x = np.random.default_rng(4).standard_normal((64, 5)).astype(np.float32)
    seen = []
    for scale in (1.0, 10.0):
        proto = mlp(weight(12, outputs, seed=3) * np.float32(scale))
        analysis = onnxprune.analyze(proto)
        group = next(g for g in analysis.groups if g.exact)
        stats = collect_statistics(analysis.analysis.model, [("r", 1)], [{"x": x}],
                                   gram=[("r", 1)])  # fmt: skip
        score = score_groups(analysis.analysis, [group], "obs", stats)[group.id]
        inits = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64)
                 for t in proto.graph.initializer}  # fmt: skip
        r = np.maximum(x @ inits["w1"] + inits["b1"], 0)
        w2 = inits["w2"]
        energy = np.sum(w2 * ((r.T @ r / len(r)) @ w2))
        atoms = group.atom_of[next(d for d in group.atom_of if d.tensor == "r")]
        expected = _surgeon_scores(r, w2)[np.argsort(atoms)] / energy
        np.testing.assert_allclose(score, expected, rtol=1e-6)
        seen.append(score)
    np.testing.assert_allclose(seen[0], seen[1], rtol=1e-6)


def residual() -> onnx.ModelProto:
    """y = x + relu(x W1 + b1) W2 + b2: fc2's output joins the stream s = x + (fc2 + b2)."""
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["m"], name="fc2"),
             helper.make_node("Add", ["m", "b2"], ["mb"], name="bias"),
             helper.make_node("Add", ["x", "mb"], ["y"], name="join")]  # fmt: skip
    inits = {"w1": weight(5, 12, seed=1), "b1": weight(12, seed=2), "w2": weight(12, 5, seed=3),
             "b2": weight(5, seed=4)}  # fmt: skip
    return model(nodes, {"x": ["batch", 5]}, {"y": ["batch", 5]}, inits)


def test_obs_errors_are_shares_of_the_stream_they_join():
    """The stream's energy counts robustly: the median channel's second moment x channels."""
    proto = residual()
    x = np.random.default_rng(5).standard_normal((64, 5)).astype(np.float32)
    x[:, 0] *= 30  # one outlier dimension: it does not set the scale
    analysis = onnxprune.analyze(proto)
    fc2 = analysis.analysis.nodes["fc2"]
    assert join_of(fc2) == ("y", 1)
    group = next(g for g in analysis.groups if g.exact and g.n_atoms == 12)
    stats = collect_statistics(analysis.analysis.model, [("r", 1), ("y", 1)], [{"x": x}],
                               gram=[("r", 1)])  # fmt: skip
    score = score_groups(analysis.analysis, [group], "obs", stats)[group.id]
    inits = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64)
             for t in proto.graph.initializer}  # fmt: skip
    r = np.maximum(x @ inits["w1"] + inits["b1"], 0)
    y = x + r @ inits["w2"] + inits["b2"]
    stream = np.median(np.mean(y**2, axis=0)) * 5
    atoms = group.atom_of[next(d for d in group.atom_of if d.tensor == "r")]
    expected = _surgeon_scores(r, inits["w2"])[np.argsort(atoms)] / stream
    np.testing.assert_allclose(score, expected, rtol=1e-5)


def duplicated() -> onnx.ModelProto:
    """x (3) -> MatMul -> h (4) -> MatMul -> y (2) where h1 copies h0 and h2 has a tenth of
    the spread of the others: magnitude and fluctuation drop h2, which nothing else carries;
    the refit rebuilds h1 from h0 exactly."""
    w1 = np.array([[1, 1, 0, 0], [0, 0, 0.3, 0], [0, 0, 0, 1]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]  # fmt: skip
    return model(nodes, {"x": ["batch", 3]}, {"y": ["batch", 2]},
                 {"w1": w1, "w2": np.ones((4, 2), np.float32)})  # fmt: skip


def test_obs_removes_what_the_refit_can_rebuild():
    proto = duplicated()
    x = np.random.default_rng(0).standard_normal((256, 3)).astype(np.float32)
    data = [{"x": x}]
    errors = {}
    for criterion in ("obs", "fluctuation"):
        result = onnxprune.prune(proto, ratio=0.25, criterion=criterion, calibration=data,
                                 refit=True)  # fmt: skip
        assert_exact(result)
        (removed,) = result.plan.removed.values()

        def run(m: onnx.ModelProto) -> np.ndarray:
            session = ort.InferenceSession(m.SerializeToString(),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
            return session.run(None, {"x": x})[0]

        errors[criterion] = (removed.tolist(),
                             float(np.mean((run(result.to_proto()) - run(proto)) ** 2)))  # fmt: skip
    assert errors["fluctuation"][0] == [2]
    assert errors["obs"][0] in ([0], [1])
    assert errors["obs"][1] < errors["fluctuation"][1] / 3, errors


def test_obs_with_consumers_reading_parts_of_the_group():
    """h (8) split 3 / 5 into two MatMuls: each consumer sees some of the channels, and a
    step may remove only channels one of them does not read."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Split", ["h", "sizes"], ["ha", "hb"], name="split", axis=1),
             helper.make_node("MatMul", ["ha", "wa"], ["ya"], name="fa"),
             helper.make_node("MatMul", ["hb", "wb"], ["yb"], name="fb"),
             helper.make_node("Add", ["ya", "yb"], ["y"], name="add")]  # fmt: skip
    proto = model(nodes, {"x": ["batch", 5]}, {"y": ["batch", 2]},
                  {"w1": weight(5, 8, seed=1), "sizes": np.array([3, 5], np.int64),
                   "wa": weight(3, 2, seed=2), "wb": weight(5, 2, seed=3)})  # fmt: skip
    x = np.random.default_rng(3).standard_normal((64, 5)).astype(np.float32)
    for ratio in (0.25, 0.5, 0.75):
        result = onnxprune.prune(proto, ratio=ratio, criterion="obs", calibration=[{"x": x}])
        assert_exact(result)


def test_obs_works_without_the_refit():
    proto = mlp()
    x = np.random.default_rng(1).standard_normal((32, 5)).astype(np.float32)
    result = onnxprune.prune(proto, ratio=0.5, criterion="obs", calibration=[{"x": x}],
                             refit=False)  # fmt: skip
    assert_exact(result)
    assert result.options["criterion"] == "obs" and not result.options["refit"]


def test_global_ranks_comparable_scores_per_mac():
    """Equal scores everywhere: channels costing 4 MACs go before those costing 1; without
    costs (normalised scores) every channel counts the same."""
    cheap, dear = onnxprune.analyze(two_layer_mlp(40)).prunable
    scores = {g.id: np.ones(g.n_atoms) for g in (cheap, dear)}
    removed = allocate_global([cheap, dear], scores, 0.2, costs={cheap.id: 1.0, dear.id: 4.0})
    assert dear.id in removed and cheap.id not in removed
    plain = allocate_global([cheap, dear], scores, 0.2)
    assert sum(map(len, plain.values())) == int(0.2 * (cheap.n_atoms + dear.n_atoms))


def test_global_with_obs_meets_a_macs_target():
    proto = mlp()
    x = np.random.default_rng(2).standard_normal((32, 5)).astype(np.float32)
    result = onnxprune.prune(proto, target_macs=0.6, allocation="global", criterion="obs",
                             calibration=[{"x": x}])  # fmt: skip
    assert_exact(result)
    assert result.options["criterion"] == "obs"
    assert result.cost_after.macs <= 0.6 * result.cost_before.macs


@pytest.mark.parametrize("op, w2, attrs, out", [
    ("Conv", weight(6, 2, 3, 3, seed=7), {"group": 2, "pads": [1, 1, 1, 1]}, [2, 6, 5, 5]),
    ("ConvTranspose", weight(4, 3, 2, 2, seed=8), {"strides": [2, 2]}, [2, 3, 10, 10]),
])  # fmt: skip
def test_the_weights_reading_each_channel_of_grouped_and_transposed_convolutions(op, w2, attrs,
                                                                                  out):  # fmt: skip
    """Squared norm of the weights reading channel c: W[outputs of its group, c % (C/G)] for a
    grouped Conv, W[c] for a ConvTranspose (both counted as 1 before); fluctuation is
    Var(h_c) times it."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1"),
             helper.make_node(op, ["h", "w2"], ["y"], name="c2", **attrs)]  # fmt: skip
    proto = model(nodes, {"x": [2, 3, 5, 5]}, {"y": out},
                  {"w1": weight(4, 3, 1, 1, seed=6), "w2": w2})  # fmt: skip
    analysis = onnxprune.analyze(proto)
    w = w2.astype(np.float64)
    if op == "Conv":  # channel c: group c // 2 (outputs 3g..3g+2), kernel slice c % 2
        reads = np.array([np.sum(w[3 * (c // 2):3 * (c // 2) + 3, c % 2] ** 2) for c in range(4)])
    else:
        reads = np.array([np.sum(w[c] ** 2) for c in range(4)])
    got = reader_weight_sq(analysis.analysis, Consumer("c2", 0, 1), 4)
    np.testing.assert_allclose(got, reads, rtol=1e-9)
    if op == "ConvTranspose":  # its input channels prune (the grouped Conv ties them to y's)
        x = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(np.float32)
        group = next(g for g in analysis.groups if g.exact)
        stats = collect_statistics(analysis.analysis.model, [("h", 1)], [{"x": x}])
        score = score_groups(analysis.analysis, [group], "fluctuation", stats)[group.id]
        atoms = group.atom_of[next(d for d in group.atom_of if d.tensor == "h")]
        expected = np.bincount(atoms, weights=stats[("h", 1)].var * reads,
                               minlength=group.n_atoms)  # fmt: skip
        np.testing.assert_allclose(score, expected / expected.mean(), rtol=1e-6)
