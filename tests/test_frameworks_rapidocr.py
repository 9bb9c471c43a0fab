"""RapidOCR (PaddleOCR models converted by paddle2onnx, real weights from PyPI
``rapidocr-onnxruntime``): text detection, direction classifier and recognition each pruned
to 70% of their MACs with calibration, verified, and read rendered text nearly as well.

paddle2onnx declares the dynamic batch as ``-1`` (read as dynamic), computes reshape targets
from ``Shape`` slices and int32 constants joined by ``Concat(axis=-1)`` (made axis 0 so that
shape inference follows them), and writes SVTR attention as MatMuls over (batch, heads,
tokens, head_dim) after reshaping a fused QKV projection (3 x 8 heads x 15). Found: the
detector and the classifier prune completely; the recogniser's convolutions, its MLPs and
both attention blocks' heads (8 heads of 45 QKV channels), not its 120-wide token width
(reshapes over an unnamed, symbolic height).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ocr
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

pytest.importorskip("rapidocr_onnxruntime")


def test_rapidocr_models_prune_verify_and_still_read(tmp_path):
    calibration = ocr.model_feeds(ocr.pages(4, split=0))
    pruned = {}
    for role in ocr.MODELS:
        path = ocr.model_file(role)
        analysis = onnxprune.analyze(path)
        exact = [g for g in analysis.groups if g.exact]
        heads = [g for g in exact if g.atom_size > 1]
        if role == "rec":
            assert [(g.n_atoms, g.atom_size) for g in heads] == [(8, 45), (8, 45)]
        else:
            assert not heads and len(exact) >= 25
        if role in ("det", "cls"):
            assert analysis.prunable_share() == 1.0
        result = onnxprune.prune(path, target_macs=0.7, calibration=calibration[role],
                                 inputs=calibration[role][:1])  # fmt: skip
        assert_exact(result)
        assert result.cost_after.macs <= 0.72 * result.cost_before.macs
        if role == "rec":
            assert any(result.plan.removed.get(g.id, np.empty(0)).size for g in heads)
        pruned[role] = result.save(tmp_path / ocr.MODELS[role])
        print(f"rapidocr {role}: {len(exact)}/{len(analysis.groups)} groups exact, MACs "
              f"{result.cost_before.macs / 1e9:.2f}G -> {result.cost_after.macs / 1e9:.2f}G")

    # the recogniser's character table lives in the model's metadata: it must survive
    assert "character" in {p.key for p in onnx.load(pruned["rec"]).metadata_props}
    pages = ocr.pages(4, split=1)
    before = ocr.character_accuracy(pages, ocr.read_pages(pages))
    after = ocr.character_accuracy(pages, ocr.read_pages(pages, pruned))
    print(f"rapidocr character accuracy on {len(pages)} rendered pages: {before:.2%} -> "
          f"{after:.2%}, every model at 70% of its MACs")
    check_accuracy("rapidocr_original", before)
    check_accuracy("rapidocr_calibrated_70", after)
