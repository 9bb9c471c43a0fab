"""Transformer architectures from both torch exporters: heads and MLP prune exactly.

Each model (tests/transformer_zoo.py) is exported once per exporter into a cache outside the
repo. For every export: ``analyze`` finds one group of whole attention heads per attention
layer (a group's canonical channel is one head: its query, key and value columns, or for
grouped-query attention one KV head with its query heads) and one MLP group per layer;
pruning at 0.5 removes half of every group, heads included, and passes the oracle on inputs
with two different batch and sequence sizes where the export has them; the pruned outputs
differ from the original (the oracle is not comparing a constant); ratio 0 reproduces the
original outputs; onnxruntime runs the pruned model with the original's output names/shapes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

import onnxprune
import transformer_zoo
from conftest import record_zoo_result
from graphs import assert_exact, run
from onnxprune.report import analysis_report

SWIN_HEADS = (3, 3, 6, 6, *(12,) * 6, 24, 24)

#: Whole-head groups per model, as {heads per group: number of layers}.
EXPECTED_HEADS: dict[str, Counter] = {
    "bert": Counter({12: 2}),
    "distilbert": Counter({12: 2}),
    "gpt2": Counter({12: 2}),
    "llama": Counter({2: 2}),  # 2 KV heads, each with its 4 query heads
    "qwen2": Counter({2: 2}),
    "vit": Counter({12: 2}),
    "vit_b_16": Counter({12: 2}),
    "swin_t": Counter(SWIN_HEADS),
}

#: What an exporter's graph keeps from onnxprune, said where it differs from the above.
EXPORTER_LIMITS: dict[tuple[str, str], tuple[Counter, str]] = {
    ("swin_t", "torchscript"): (
        Counter(SWIN_HEADS) - Counter({3: 1, 6: 1}),
        "TorchScript exports the shifted-window roll with run-time Pad/Slice sizes, so in "
        "the two shifted blocks of the 64px model heads are tied to window axes; head_dim "
        "prunes there instead (still exact)",
    ),
}

#: MLP (intermediate width) groups per model: one per layer.
EXPECTED_MLP = {"bert": 2, "distilbert": 2, "gpt2": 2, "llama": 2, "qwen2": 2, "vit": 2,
                "vit_b_16": 2, "swin_t": 12}  # fmt: skip

CASES = [(n, e) for n in transformer_zoo.MODELS for e in transformer_zoo.EXPORTERS]


def _head_groups(analysis) -> list:
    """Exact groups whose canonical channel spans several positions of a produced tensor
    and whose count is a head count (not head_dim)."""
    return [g for g in analysis.groups if g.exact and g.atom_size > 1]




@pytest.mark.zoo
@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_transformer_heads_and_mlp_prune_exactly(name: str, exporter: str, tmp_path,
                                                 monkeypatch) -> None:  # fmt: skip
    path = transformer_zoo.export(name, exporter)
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory
    case = transformer_zoo.MODELS[name]
    if not case.dynamic:
        print(f"{name}: exported with a static batch: {case.static_reason}")
    expected, why = EXPORTER_LIMITS.get((name, exporter), (EXPECTED_HEADS[name], ""))
    if why:
        print(f"{name} [{exporter}]: {why}")

    analysis = onnxprune.analyze(path)
    heads = Counter(g.n_atoms for g in _head_groups(analysis) if g.n_atoms in EXPECTED_HEADS[name])
    assert heads == expected, (heads, [str(r) for g in analysis.groups for r in g.blocked][:20])
    kinds = Counter((r["kind"], r["status"]) for r in analysis_report(analysis)["groups"])
    assert kinds[("heads", "exact")] == sum(expected.values()), kinds  # analyze lists them
    mlp = [g for g in analysis.groups if g.exact and g.atom_size == 1 and g.n_atoms >= 256]
    assert len(mlp) >= EXPECTED_MLP[name]

    feeds = transformer_zoo.verification_feeds(name)
    original = onnx.load(path)
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds)
    assert_exact(result)
    assert result.verification.max_abs_diff < 1e-4
    for group in _head_groups(analysis):
        if group.n_atoms in EXPECTED_HEADS[name]:
            assert result.plan.removed[group.id].size == group.n_atoms // 2, "half the heads go"
    pruned = result.to_proto()
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    changed = 0.0
    for feed in feeds:
        before, after = run(original, feed), run(pruned, feed)
        for a, b in zip(before, after, strict=True):
            assert a.shape == b.shape and np.isfinite(b).all()
            assert a.std() > 0, "a constant output would make the oracle trivial"
            changed = max(changed, float(np.abs(a - b).max()))
    assert changed > 1e-3, "pruning half the heads must change the unmasked output"
    assert result.cost_after.params < 0.9 * result.cost_before.params

    identity = onnxprune.prune(path, ratio=0.0, inputs=feeds[:1])
    for a, b in zip(run(original, feeds[0]), run(identity.to_proto(), feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.iterdir()), "analysis or pruning wrote files into the cwd"
    record_zoo_result({
        "model": name, "exporter": exporter, "groups": len(analysis.groups),
        "share": analysis.prunable_share(),
        "params_kept": result.cost_after.params / result.cost_before.params,
        "macs_kept": result.cost_after.macs / max(result.cost_before.macs, 1),
        "max_abs_diff": result.verification.max_abs_diff,
    })  # fmt: skip


@pytest.mark.zoo
def test_ort_optimized_llama_prunes_around_ops_onnx_does_not_know() -> None:
    """A Llama after onnxruntime's optimizer: SimplifiedLayerNormalization sits in the default
    domain without an ONNX schema (onnx.checker refuses it), SkipSimplifiedLayerNormalization in
    com.microsoft. The hidden width they normalise stays; heads and MLP prune, exactly, and
    the checker still checks everything else."""
    path = transformer_zoo.export_ort_optimized("llama", model_type="gpt2")
    ops = Counter((n.domain, n.op_type) for n in onnx.load(path).graph.node)
    assert ops[("", "SimplifiedLayerNormalization")] == 1
    assert ops[("com.microsoft", "SkipSimplifiedLayerNormalization")] == 4
    analysis = onnxprune.analyze(path)
    assert "SimplifiedLayerNormalization" in analysis.analysis.unknown_ops
    result = onnxprune.prune(path, ratio=0.5, inputs=transformer_zoo.verification_feeds("llama"))
    assert_exact(result)
    assert result.cost_after.params < 0.8 * result.cost_before.params
    kept = Counter((n.domain, n.op_type) for n in result.to_proto().graph.node)
    assert kept[("", "SimplifiedLayerNormalization")] == 1


@pytest.mark.zoo
def test_ort_optimized_bert_prunes_fused_attention_heads() -> None:
    """BERT after onnxruntime's transformer optimizer: com.microsoft Attention (packed QKV,
    ``num_heads``), SkipLayerNormalization, BiasGelu, EmbedLayerNormalization."""
    path = transformer_zoo.export_ort_optimized("bert")
    fused = onnx.load(path)
    ops = Counter(n.op_type for n in fused.graph.node if n.domain == "com.microsoft")
    assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] == 4, ops
    analysis = onnxprune.analyze(path)
    assert not analysis.analysis.unknown_ops.get("com.microsoft.Attention")
    heads = [g for g in analysis.groups if g.exact and g.n_atoms == 12 and g.atom_size > 1]
    assert len(heads) == 2, [str(r) for g in analysis.groups for r in g.blocked]

    feeds = transformer_zoo.verification_feeds("bert")
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds)
    assert_exact(result)
    assert result.verification.max_abs_diff < 1e-4
    pruned = result.to_proto()
    attrs = [onnx.helper.get_attribute_value(a) for n in pruned.graph.node
             if n.op_type == "Attention" for a in n.attribute if a.name == "num_heads"]  # fmt: skip
    assert attrs == [6, 6]
    for feed in feeds:
        before, after = run(fused, feed), run(pruned, feed)
        assert before[0].shape == after[0].shape and np.abs(before[0] - after[0]).max() > 1e-3
    assert result.cost_after.params < 0.6 * result.cost_before.params


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", transformer_zoo.EXPORTERS)
def test_head_dim_prunes_inside_heads_keeping_rotary_pairs(exporter: str) -> None:
    """``head_dim=True``: every head keeps its count and loses dims. Llama's RoPE rotates
    dims d and d + D/2 together, so the query/key head_dim group has D/2 = 8 channels (pairs);
    value/output head_dim has D = 16 per layer."""
    path = transformer_zoo.export("llama", exporter)
    analysis = onnxprune.analyze(path, head_dim=True)
    rows = [r for r in analysis_report(analysis)["groups"] if r["status"] == "exact"]
    head_dim = Counter(r["channels"] for r in rows if r["kind"] == "head_dim")
    assert head_dim[8] >= 1 and head_dim[16] == 2, head_dim
    assert not any(r["kind"] == "heads" for r in rows)
    feeds = transformer_zoo.verification_feeds("llama")
    result = onnxprune.prune(path, ratio=0.5, head_dim=True, inputs=feeds)
    assert_exact(result)
    assert result.verification.max_abs_diff < 1e-4
    pruned = result.to_proto()
    shapes = [sorted(t.dims) for t in pruned.graph.initializer]
    assert [64, 128] in shapes, "q_proj/o_proj: 8 heads x 8 of 16 dims (was 128 x 128)"
    assert [16, 128] in shapes and [32, 128] not in shapes, "k/v_proj: 2 KV heads x 8 dims"
    before, after = run(onnx.load(path), feeds[1]), run(pruned, feeds[1])
    assert before[0].shape == after[0].shape


@pytest.mark.zoo
def test_hidden_size_prunes_only_when_approximate_is_allowed() -> None:
    """The residual width is normalised by RMSNorm: approximate, pruned only on request and
    labelled; the oracle then covers the exact groups and similarity the rest."""
    path = transformer_zoo.export("llama", "dynamo")
    analysis = onnxprune.analyze(path)
    hidden = [g for g in analysis.groups if g.approximate and not g.blocked]
    assert len(hidden) == 1 and hidden[0].width == 128
    feeds = transformer_zoo.verification_feeds("llama")
    default = onnxprune.prune(path, ratio=0.25, inputs=feeds)
    assert hidden[0].id not in default.plan.removed
    result = onnxprune.prune(path, ratio=0.25, inputs=feeds, allow_approximate=True)
    assert result.plan.removed[hidden[0].id].size == 32
    assert result.verification.passed, "exact groups still match their masked original"
    assert result.similarity is not None and "approximate" in result.similarity.note
    assert result.cost_after.params < default.cost_after.params


@pytest.mark.zoo
def test_cli_prunes_head_dim_and_verifies_from_the_stored_plan(tmp_path, capsys) -> None:
    from onnxprune.cli import main

    path = transformer_zoo.export("gpt2", "torchscript")
    out = tmp_path / "gpt2.pruned.onnx"
    assert main(["analyze", str(path)]) == 0
    assert "12 heads" in capsys.readouterr().out
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--head-dim",
                 "--dim", "batch=2", "--dim", "sequence=6"]) == 0  # fmt: skip
    assert main(["verify", str(path), str(out), "--dim", "batch=2", "--dim", "sequence=6"]) == 0
    assert "passed" in capsys.readouterr().out
