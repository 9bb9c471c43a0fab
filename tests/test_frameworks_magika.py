"""magika (Keras/JAX model converted by tf2onnx, real weights from PyPI): content types of
real files on this machine before and after pruning.

tf2onnx wraps the convolution in NHWC<->NCHW Transposes, writes int32 Slice bounds and
reshapes the (2048 bytes x 64 embedding) matrix into (512 x 256) conv input channels; the
analysis sees through all three: the embedding (64) and convolution (512) widths prune.
"""

from __future__ import annotations

import numpy as np
import pytest

import frameworks
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

pytest.importorskip("magika")


def test_magika_prunes_with_calibration_and_keeps_its_accuracy(tmp_path):
    evaluate = frameworks.files(per_label=6, split=0)
    paths, expected = [p for p, _ in evaluate], [label for _, label in evaluate]
    model = frameworks.magika_model_dir() / "model.onnx"
    analysis = onnxprune.analyze(model)
    assert sorted(g.n_atoms for g in analysis.groups if g.exact) == [64, 512]
    calibration = frameworks.magika_features([p for p, _ in frameworks.files(12, split=1)])
    result = onnxprune.prune(model, target_macs=0.7, calibration=calibration,
                             inputs=[{"bytes": calibration[0]["bytes"][:4]}])  # fmt: skip
    assert_exact(result)
    assert result.cost_after.macs <= 0.72 * result.cost_before.macs
    pruned = result.save(tmp_path / "magika.pruned.onnx")
    before = np.mean(np.array(frameworks.magika_labels(paths)) == np.array(expected))
    after = np.mean(np.array(frameworks.magika_labels(paths, pruned)) == np.array(expected))
    print(f"magika on {len(paths)} files: {before:.1%} -> {after:.1%} at 70% of the MACs")
    check_accuracy("magika_original", before)
    check_accuracy("magika_calibrated_70", after)
