"""No zoo model fails in the rewrite after the analysis called a group prunable: every
prunable group (exact and approximate, whole heads and, for transformers, head_dim) of every
zoo export is rewritten at ratio 0.3, passes onnx.checker, and the model runs in onnxruntime
with its outputs' shapes unchanged. (The oracle runs on these models in test_zoo.py and
test_transformer_zoo.py; this test is about the analysis never promising a rewrite it cannot
do.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
import transformer_zoo
import zoo
from graphs import run

CNN = [(name, exporter) for name in zoo.ZOO_MODELS for exporter in ("torchscript", "dynamo")]
TEXT = [(name, exporter, head_dim) for name in transformer_zoo.MODELS
        for exporter in transformer_zoo.EXPORTERS for head_dim in (False, True)]  # fmt: skip


def _check(path, feeds: list[dict[str, np.ndarray]], head_dim: bool = False) -> None:
    result = onnxprune.prune(path, ratio=0.3, allow_approximate=True, head_dim=head_dim,
                             verify=False, inputs=feeds)  # fmt: skip
    prunable = [g for g in result.groups if g.prunable]
    expected = {g.id for g in prunable if int(g.n_atoms * 0.3) >= 1}
    assert expected <= set(result.plan.removed), sorted(expected - set(result.plan.removed))
    original, pruned = onnx.load(path), result.to_proto()
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    for a, b in zip(run(original, feeds[0]), run(pruned, feeds[0]), strict=True):
        assert a.shape == b.shape


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "exporter"), CNN, ids=[f"{n}-{e}" for n, e in CNN])
def test_every_cnn_group_rewrites(name, exporter):
    _check(zoo.export(name, exporter), [{"input": zoo.sample_input(name)}])


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "exporter", "head_dim"), TEXT,
                         ids=[f"{n}-{e}-{'head_dim' if h else 'heads'}" for n, e, h in TEXT])
def test_every_transformer_group_rewrites(name, exporter, head_dim):
    case = transformer_zoo.MODELS[name]
    feeds = [transformer_zoo.feeds(name, batch=1 if case.dynamic else case.batch)]
    _check(transformer_zoo.export(name, exporter), feeds, head_dim)
