"""Depth pruning on real exports: torchvision CNNs (identity and projection shortcuts, layer
scale), BERT (post-norm), Llama and Qwen2 (pre-norm, GQA, shared rotary tables and masks),
ViT, and a Keras ResNet through tf2onnx. Each drops two branches together with a width
ratio and passes the oracle (the original with those branches zeroed at their sums and the
removed channels masked); the block count and layering come from the graph alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import frameworks
import onnxprune
import transformer_zoo
import zoo
from graphs import assert_exact, run

#: (source, model, exporter) -> (removable blocks, layers)
CASES = {
    ("torchvision", "resnet18", "torchscript"): (8, 8),
    ("torchvision", "mobilenet_v2", "dynamo"): (10, 10),
    ("torchvision", "convnext_tiny", "torchscript"): (18, 18),
    ("transformers", "bert", "torchscript"): (4, 2),
    ("transformers", "llama", "dynamo"): (4, 2),
    ("transformers", "qwen2", "torchscript"): (4, 2),
    ("transformers", "vit", "torchscript"): (4, 2),
    ("keras", "resnet50", "tf2onnx"): (16, 16),
}


def _model(source: str, name: str, exporter: str) -> tuple[str, list[dict[str, np.ndarray]]]:
    if source == "torchvision":
        return str(zoo.export(name, exporter)), [
            {"input": zoo.sample_input(name, seed=s)} for s in (0, 1)]
    if source == "transformers":
        return (str(transformer_zoo.export(name, exporter)),
                transformer_zoo.verification_feeds(name))
    path = frameworks.keras_export(name)
    input_name = onnx.load(path).graph.input[0].name
    rng = np.random.default_rng(0)
    return str(path), [{input_name: rng.standard_normal((1, 64, 64, 3)).astype(np.float32)}
                       for _ in range(2)]  # fmt: skip


@pytest.mark.zoo
@pytest.mark.parametrize(("source", "name", "exporter"), list(CASES),
                         ids=[f"{n}-{e}" for _, n, e in CASES])  # fmt: skip
def test_blocks_drop_with_width_and_pass_the_oracle(source: str, name: str, exporter: str):
    path, feeds = _model(source, name, exporter)
    analysis = onnxprune.analyze(path)
    found = analysis.blocks
    assert (len(found.blocks), len(found.layers)) == CASES[(source, name, exporter)], [
        (b.add, b.input) for b in found.blocks]
    result = onnxprune.prune(path, remove_blocks=2, ratio=0.25, inputs=feeds)
    assert_exact(result)
    assert len(result.plan.blocks) == 2 and result.plan.removed
    assert result.cost_after.macs < result.cost_before.macs
    dropped = {b.add for b in found.blocks if b.id in result.plan.blocks}
    pruned = result.to_proto()
    assert not dropped & {n.name for n in pruned.graph.node}, "the dropped sums are gone"
    original = onnx.load(path)
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    for feed in feeds:
        for a, b in zip(run(original, feed), run(pruned, feed), strict=True):
            assert a.shape == b.shape
    print(f"{name} [{exporter}]: {len(found.blocks)} blocks in {len(found.layers)} layers; "
          f"2 dropped + ratio 0.25 keeps {result.cost_after.macs / result.cost_before.macs:.1%} "
          "of MACs")


@pytest.mark.zoo
@pytest.mark.parametrize(("source", "name", "exporter"), [
    ("torchvision", "resnet18", "torchscript"), ("transformers", "llama", "dynamo")])
def test_every_block_dropped_at_once_passes_the_oracle(source: str, name: str, exporter: str):
    """All blocks of resnet18 (three with a projection shortcut) or of a Llama decoder
    (attention reading the shared rotary tables and mask, MLP) go in one plan."""
    path, feeds = _model(source, name, exporter)
    found = onnxprune.analyze(path).blocks.blocks
    plan = {"removed": {}, "blocks": {str(b.id): {"add": b.add, "skip_input": b.skip_index}
                                      for b in found}}  # fmt: skip
    result = onnxprune.prune(path, plan=plan, inputs=feeds)
    assert_exact(result)
    assert sorted(result.plan.blocks) == [b.id for b in found]
    pruned = result.to_proto()
    weights = {w for b in found for w in b.weights}
    assert not weights & {t.name for t in pruned.graph.initializer}
