"""ddddocr 1.6.1 (PyPI, MIT): a captcha OCR whose wheel ships its ONNX models.

Its float recogniser (``common.onnx``: CNN, bidirectional LSTM, Gemm over 8210 characters)
prunes at ratio 0.3 through the oracle, the LSTM's hidden width included (a Reshape whose
leading sizes are run-time symbols is aligned from the right), losing over 20% of its
parameters; judged on the same captchas with its own charset it reads 91% before, 81% at
ratio 0.1 and nothing at 0.3 (magnitude; calibration did not help: 73% at 0.1). Its "old"
recogniser (``common_old.onnx``) is dynamically quantized: DynamicQuantizeLinear +
ConvInteger backbone, then com.microsoft DynamicQuantizeLSTM (no rule: blocked, named) and a
MatMul head, on a 64-pixel-high line of any width. At 90% of the MACs, calibrated on 32
rendered captchas, the backbone prunes bit for bit against the masked original, and the
package's own reader (``DdddOcr.classification``) is judged on 100 other captchas rendered
here (4-6 lowercase letters and digits in DejaVu fonts on grey): exact string matches."""

from __future__ import annotations

import io
import random
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import ocr
import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

if find_spec("ddddocr") is None:
    pytest.skip("ddddocr not installed (make test installs its wheel)", allow_module_level=True)

FOLDER = Path(find_spec("ddddocr").submodule_search_locations[0])
MODEL = FOLDER / "common_old.onnx"
CHARS = "abcdefghijkmnpqrstuvwxyz23456789"


def _captchas(count: int, seed: int) -> list[tuple[str, bytes]]:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for i in range(count):
        text = "".join(rng.choice(CHARS) for _ in range(rng.randint(4, 6)))
        image = Image.new("RGB", (160, 60), (rng.randint(200, 255),) * 3)
        ImageDraw.Draw(image).text((10, 8), text, fill=(rng.randint(0, 80),) * 3,
                                   font=ocr._font(i, 34))  # fmt: skip
        png = io.BytesIO()
        image.save(png, format="PNG")
        out.append((text, png.getvalue()))
    return out


class _Capture:
    """A session stand-in that records the feeds the reader makes and runs ``session``."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.feeds = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feed):
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        return self.session.run(names, feed)


def _read(model: str | bytes, samples: list[tuple[str, bytes]],
          beta: bool = False) -> tuple[float, list[dict]]:  # fmt: skip
    """(exact-match share, the feeds the package's reader gave the model): the reader of
    ``common_old.onnx`` (``old=True``), or with ``beta`` that of ``common.onnx`` (its own
    charset)."""
    import ddddocr

    reader = ddddocr.DdddOcr(show_ad=False, old=not beta, beta=beta)
    capture = _Capture(ort.InferenceSession(model, providers=["CPUExecutionProvider"]))
    reader.ocr_engine.session = capture
    right = sum(reader.classification(png) == text for text, png in samples)
    return right / len(samples), capture.feeds


@pytest.mark.zoo
def test_dynamically_quantized_ocr_prunes_bit_for_bit_and_keeps_reading():
    analysis = onnxprune.analyze(MODEL)
    assert "com.microsoft.DynamicQuantizeLSTM" in analysis.analysis.unknown_ops
    _, calibration = _read(str(MODEL), _captchas(32, seed=1))
    test = _captchas(100, seed=2)
    before, _ = _read(str(MODEL), test)
    result = onnxprune.prune(MODEL, target_macs=0.9, calibration=calibration,
                             inputs=calibration[:2])  # fmt: skip
    assert_exact(result)
    assert result.verification.max_abs_diff == 0.0
    assert result.cost_after.macs / result.cost_before.macs <= 0.9
    assert {g for g in result.plan.removed} and result.plan.masks
    after, _ = _read(result.to_proto().SerializeToString(), test)
    print(f"ddddocr common_old: {before:.0%} -> {after:.0%} at "
          f"{result.cost_after.macs / result.cost_before.macs:.1%} MACs")
    check_accuracy("ddddocr_original", before)
    check_accuracy("ddddocr_calibrated_90", after)


@pytest.mark.zoo
def test_recurrent_ocr_prunes_its_lstm_through_the_oracle():
    import onnx

    path = FOLDER / "common.onnx"
    test = _captchas(100, seed=2)
    before, feeds = _read(str(path), test[:2], beta=True)
    result = onnxprune.prune(path, ratio=0.3, inputs=feeds)
    assert_exact(result)
    assert result.cost_after.params <= 0.8 * result.cost_before.params
    hidden = [next(a.i for a in n.attribute if a.name == "hidden_size")
              for n in result.to_proto().graph.node if n.op_type == "LSTM"]
    original = [next(a.i for a in n.attribute if a.name == "hidden_size")
                for n in onnx.load(path).graph.node if n.op_type == "LSTM"]
    assert hidden and hidden[0] < original[0]
    accuracy, _ = _read(str(path), test, beta=True)
    after, _ = _read(result.to_proto().SerializeToString(), test, beta=True)
    light = onnxprune.prune(path, ratio=0.1, inputs=feeds)
    assert_exact(light)
    after_light, _ = _read(light.to_proto().SerializeToString(), test, beta=True)
    print(f"ddddocr common (LSTM): {accuracy:.0%} -> {after_light:.0%} at ratio 0.1, "
          f"{after:.0%} at ratio 0.3 (params {result.cost_after.params / result.cost_before.params:.1%}, "
          f"LSTM hidden {original[0]} -> {hidden[0]})")
    check_accuracy("ddddocr_lstm_original", accuracy)
    check_accuracy("ddddocr_lstm_l2_10", after_light)
