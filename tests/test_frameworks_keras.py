"""Keras via tf2onnx (directly, and through a TFLite flatbuffer): applications, a
MultiHeadAttention block and a trained CNN, pruned and verified.

tf2onnx writes NHWC models with a Transpose at the boundary and folds batch norm into the
convolutions; the applications prune completely. It lowers Keras MultiHeadAttention's einsums
to MatMuls between Reshapes whose targets it computes with ReduceProd and Max over shape
slices, merging the heads into the batch axis. With a dynamic batch the MLP width and the
attention's head_dim (query/key and value separately, 8 channels in each of the 4 heads)
prune, not the heads: positions on a batch x heads axis of unknown size cannot be mapped.
Exported with batch 1, the 4 heads prune (one side of each Max is then a folded constant).
Each export prunes at ratio 0.5, passes the oracle and runs in onnxruntime with unchanged
outputs. A CNN trained here on digits keeps its accuracy at half its MACs, through tf2onnx
directly and through TFLite.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import onnx
import pytest

import frameworks
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact, run

# Checked without importing: TensorFlow must never load into a test process beside torch
# (the export runs in a subprocess); importing it here crashed an xdist worker later.
if importlib.util.find_spec("tf2onnx") is None or importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow/tf2onnx not installed (the test extra installs them)",
                allow_module_level=True)

SHAPES = {"mobilenet_v2": (1, 96, 96, 3), "resnet50": (1, 64, 64, 3), "mha_block": (1, 16, 32),
          "mha_block_batch1": (1, 16, 32), "mobilenet_v2_tflite": (1, 96, 96, 3),
          "digits_cnn": (1, 8, 8, 1), "digits_cnn_tflite": (1, 8, 8, 1)}  # fmt: skip


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(frameworks.KERAS_MODELS | frameworks.TFLITE_MODELS))
def test_keras_model_prunes_and_verifies(name: str) -> None:
    path = frameworks.keras_export(name)
    rng = np.random.default_rng(0)
    input_name = onnx.load(path).graph.input[0].name  # TFLite names it after the signature
    feeds = [{input_name: rng.standard_normal(SHAPES[name]).astype(np.float32)}
             for _ in range(2)]
    analysis = onnxprune.analyze(path)
    share = analysis.prunable_share()
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    print(f"keras {name}: {len(analysis.prunable)}/{len(analysis.groups)} groups prunable, "
          f"share {share:.1%}, ops {dict(ops.most_common(6))}")
    exact = sorted((g.n_atoms, g.atom_size) for g in analysis.groups if g.exact)
    if name == "mha_block":  # head_dim of Q/K and of V (8 in each of 4 heads), MLP width
        assert exact == [(8, 4), (8, 4), (64, 1)]
    elif name == "mha_block_batch1":  # 4 heads (8 channels each in Q, K and V), MLP width
        assert exact == [(4, 8), (64, 1)]
    else:
        assert share >= 0.9, [str(r) for g in analysis.groups for r in g.blocked]
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds)
    assert_exact(result)
    assert result.cost_after.params < result.cost_before.params
    original = onnx.load(path)
    for feed in feeds:
        before, after = run(original, feed), run(result.to_proto(), feed)
        assert before[0].shape == after[0].shape and before[0].std() > 0


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["digits_cnn", "digits_cnn_tflite"])
def test_trained_keras_cnn_keeps_its_accuracy_at_half_the_macs(name: str) -> None:
    """The CNN trained on digits, pruned to half its MACs with calibration from its training
    split, judged on the held-out quarter."""
    path = frameworks.keras_export(name)
    x_train, x_test, _, y_test = frameworks.digits_split()
    feed = onnx.load(path).graph.input[0].name
    result = onnxprune.prune(path, target_macs=0.5, calibration=[{feed: x_train[:512].reshape(
        -1, 8, 8, 1)}], inputs=[{feed: x_test[:8].reshape(-1, 8, 8, 1)}])  # fmt: skip
    assert_exact(result)
    assert result.cost_after.macs <= 0.52 * result.cost_before.macs
    x = {feed: x_test.reshape(-1, 8, 8, 1)}
    before = (run(onnx.load(path), x)[0].argmax(1) == y_test).mean()
    after = (run(result.to_proto(), x)[0].argmax(1) == y_test).mean()
    print(f"keras {name}: digits accuracy {before:.1%} -> {after:.1%} at half the MACs")
    check_accuracy("keras_digits_original", before)
    check_accuracy("keras_digits_calibrated_50", after)
