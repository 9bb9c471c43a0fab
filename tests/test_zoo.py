"""Real torchvision architectures from both torch exporters: analyse, prune at 0.5, verify.

Each model is exported once per exporter into a cache outside the repo (tests/zoo.py). For
every export: the share of produced channels in prunable groups (outside interface blocks)
is at least 90%; pruning at 0.5 passes the oracle; the pruned model runs in onnxruntime with
the same output names and shapes; ratio 0 reproduces the original outputs; params and MACs
fall.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
import zoo
from conftest import record_zoo_result
from graphs import assert_exact, run

EXPORTERS = ("torchscript", "dynamo")
CASES = [(name, exporter) for name in zoo.ZOO_MODELS for exporter in EXPORTERS]


def _feeds(name: str, batch: int = 1) -> list[dict[str, np.ndarray]]:
    return [{"input": zoo.sample_input(name, batch=batch, seed=s)} for s in (0, 1)]


def check_prunes(path, name: str, exporter: str, batch: int = 1) -> None:
    original = onnx.load(path)
    feeds = _feeds(name, batch)
    analysis = onnxprune.analyze(path)
    share = analysis.prunable_share()
    print(f"{name} [{exporter}]: {len(analysis.prunable)}/{len(analysis.groups)} groups "
          f"prunable, share {share:.1%}")
    assert share >= 0.9, [str(r) for g in analysis.groups if g.blocked for r in g.blocked]

    result = onnxprune.prune(path, ratio=0.5, inputs=feeds)
    assert_exact(result)
    exact = [g for g in analysis.groups if g.exact]
    assert len(result.plan.removed) == len(exact), "every exact group shrinks at ratio 0.5"
    pruned = result.to_proto()
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    for feed in feeds:
        for a, b in zip(run(original, feed), run(pruned, feed), strict=True):
            assert a.shape == b.shape
    assert result.cost_after.params < result.cost_before.params
    assert result.cost_after.macs < result.cost_before.macs

    identity = onnxprune.prune(path, ratio=0.0, inputs=feeds[:1])
    expected = run(original, feeds[0])
    for a, b in zip(expected, run(identity.to_proto(), feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))
    record_zoo_result({
        "model": name, "exporter": exporter, "groups": len(analysis.groups), "share": share,
        "params_kept": result.cost_after.params / result.cost_before.params,
        "macs_kept": result.cost_after.macs / result.cost_before.macs,
        "max_abs_diff": result.verification.max_abs_diff,
    })  # fmt: skip


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "exporter"), CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_zoo_model_prunes_and_verifies(name, exporter):
    check_prunes(zoo.export(name, exporter), name, exporter)


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_dynamic_batch_export_prunes_and_keeps_the_batch_symbolic(exporter):
    path = zoo.export("resnet18", exporter, dynamic_batch=True)
    check_prunes(path, "resnet18", f"{exporter}+dynbatch", batch=3)
    pruned = onnxprune.prune(path, ratio=0.5, inputs=_feeds("resnet18", 2)).to_proto()
    batch_dim = pruned.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value


@pytest.mark.zoo
def test_convnext_layernorm_groups_are_approximate_and_prune_only_on_request():
    """convnext normalises the residual width with LayerNorm: those groups are approximate;
    the MLP hidden width (4C, between the two Linear layers) stays exact and prunes."""
    path = zoo.export("convnext_tiny", "torchscript")
    analysis = onnxprune.analyze(path)
    approximate = [g for g in analysis.groups if g.prunable and not g.exact]
    assert approximate and all("LayerNormalization" in str(g.approximate) for g in approximate)
    widths = {g.width for g in analysis.groups if g.exact}
    assert {384, 768, 1536, 3072} <= widths
    feeds = _feeds("convnext_tiny")[:1]
    result = onnxprune.prune(path, ratio=0.25, allow_approximate=True, inputs=feeds)
    assert set(result.plan.removed) >= {g.id for g in approximate}
    assert result.verification.passed and "approximate" in result.verification.note
    assert result.similarity is not None and 0.0 < result.similarity.min_cosine < 1.0
