"""silero-vad 6.2.3 (PyPI): a voice-activity detector whose wheel ships its ONNX exports. The
float16 one (``silero_vad_half.onnx``) has the sample-rate switch and the LSTM decoder inside
If branches without shapes (not entered, so blocked), a float16 STFT and a convolutional
encoder in the main graph. At ratio 0.3 the encoder's channels prune (>= 20% of the
parameters), the oracle passes, and the detector's decisions are measured on synthetic 16 kHz
clips made here (harmonic, syllable-modulated "voiced" clips against noise at several levels;
a stand-in for speech, no recording is shipped), four 512-sample chunks each, state carried."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact

MODEL = Path(find_spec("silero_vad").submodule_search_locations[0]) / "data" / "silero_vad_half.onnx"
RATE, CHUNK, CHUNKS = 16000, 512, 4


def _clips() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(CHUNK * CHUNKS) / RATE
    clips = []
    for k in range(50):
        f0 = 80 + 4 * k
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 20))
        x = x * 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
        clips.append((x / np.abs(x).max() * 0.5).astype(np.float32))
    for k in range(50):
        clips.append((rng.standard_normal(t.size) * (0.002 + 0.01 * (k % 5))).astype(np.float32))
    return clips, np.array([1] * 50 + [0] * 50)


def _speech_probability(model: str | bytes, clips: list[np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = []
    for clip in clips:
        state = np.zeros((2, 1, 128), np.float32)
        for i in range(CHUNKS):
            prob, state = session.run(None, {"input": clip[None, i * CHUNK:(i + 1) * CHUNK],
                                             "state": state})  # fmt: skip
        out.append(float(prob.ravel()[0]))
    return np.array(out)


@pytest.fixture(scope="module")
def clips():
    return _clips()


def _feeds(clips: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [{"input": c[None, :CHUNK], "state": np.zeros((2, 1, 128), np.float32)}
            for c in clips[::10]]  # fmt: skip


def test_silero_vad_prunes_exactly_and_keeps_most_decisions(clips):
    audio, labels = clips
    feeds = _feeds(audio)
    before = _speech_probability(str(MODEL), audio)
    check_accuracy("silero_vad_original", float(((before > 0.5) == labels).mean()))
    analysis = onnxprune.analyze(MODEL)
    assert "LSTM" not in analysis.analysis.unknown_ops  # it sits in a branch not entered
    result = onnxprune.prune(MODEL, ratio=0.3, inputs=feeds[:2], calibration=feeds)
    assert_exact(result)
    assert result.cost_after.params <= 0.8 * result.cost_before.params
    after = _speech_probability(result.to_proto().SerializeToString(), audio)
    accuracy = float(((after > 0.5) == labels).mean())
    print(f"silero-vad half: {((before > 0.5) == labels).mean():.1%} -> {accuracy:.1%}, "
          f"params {result.cost_before.params:,} -> {result.cost_after.params:,}")
    check_accuracy("silero_vad_calibrated_30", accuracy)
