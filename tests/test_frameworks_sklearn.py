"""scikit-learn: an MLPClassifier trained on digits, converted by skl2onnx, pruned.

skl2onnx writes MatMul/Add/Relu hidden layers and a Softmax/ArgMax head (outputs ``label`` and
``probabilities``): both hidden layers are prunable groups, the 10-class output is blocked by
the model's outputs (and ArgMax, which has no channel rule). Accuracy before/after is measured
on the held-out split, with magnitude and with calibration on training data.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest

import frameworks
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def digits_mlp():
    return frameworks.sklearn_digits_mlp()


def _accuracy(proto, x, y) -> float:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"X": x})[0] == y).mean())


def test_sklearn_mlp_hidden_units_prune_with_accuracy(digits_mlp):
    proto, x_train, x_test, y_test = digits_mlp
    analysis = onnxprune.analyze(proto)
    assert sorted(g.n_atoms for g in analysis.groups if g.exact) == [64, 128]
    before = _accuracy(proto, x_test, y_test)
    magnitude = onnxprune.prune(proto, target_macs=0.5, inputs=[{"X": x_test[:32]}])
    calibrated = onnxprune.prune(proto, target_macs=0.5, inputs=[{"X": x_test[:32]}],
                                 calibration=[{"X": x_train[:512]}])  # fmt: skip
    for result in (magnitude, calibrated):
        assert_exact(result)
        assert result.cost_after.macs <= 0.5 * result.cost_before.macs
    a_mag = _accuracy(magnitude.to_proto(), x_test, y_test)
    a_cal = _accuracy(calibrated.to_proto(), x_test, y_test)
    print(f"sklearn MLP digits: {before:.1%} -> magnitude {a_mag:.1%}, calibrated {a_cal:.1%}")
    check_accuracy("sklearn_mlp_original", before)
    check_accuracy("sklearn_mlp_l2_50", a_mag)
    check_accuracy("sklearn_mlp_calibrated_50", a_cal)
