"""The accuracy figures the README states for the tests' own data, and how far below them a
test may measure before it fails.

Each figure was measured three times on the 2-core development machine and came out
identical every time (onnxruntime's CPU sums are deterministic at a fixed thread count). The
margin is a couple of test samples (images, pairs, files, characters), so that one near-tie
flipping on another CPU does not fail the suite while a real regression does.
"""

from __future__ import annotations

#: name -> (figure in the README, margin, what is measured)
FIGURES: dict[str, tuple[float, float, str]] = {
    "digits_cnn_l2_50": (368 / 450, 2 / 450, "bundled digits CNN at 50% MACs, L2 magnitude"),
    "digits_cnn_calibrated_50": (446 / 450, 2 / 450,
                                 "bundled digits CNN at 50% MACs, fluctuation + refit"),
    "digits_cnn_calibrated_30": (441 / 450, 2 / 450,
                                 "bundled digits CNN at 30% MACs, fluctuation + refit"),
    "digits_cnn_sequential_global_30": (444 / 450, 2 / 450,
                                        "bundled digits CNN at 30% MACs, global allocation, "
                                        "fluctuation + sequential refit"),
    "digits_cnn_obs_global_30": (442 / 450, 2 / 450,
                                 "bundled digits CNN at 30% MACs, global allocation, obs + refit"),
    "digits_qdq_original": (446 / 450, 1 / 450, "digits CNN quantized (QDQ int8), original"),
    "digits_qdq_calibrated_50": (427 / 450, 2 / 450,
                                 "digits CNN quantized (QDQ, per-tensor) at 50% MACs, calibrated"),
    "digits_qdq_per_channel_calibrated_50": (428 / 450, 2 / 450,
                                             "digits CNN quantized (QDQ, per-channel) at 50% "
                                             "MACs, calibrated"),
    "silero_vad_original": (0.88, 1 / 100, "silero-vad (float16) on 100 synthetic clips"),
    "silero_vad_calibrated_30": (0.82, 1 / 100,
                                 "silero-vad (float16) on 100 synthetic clips at ratio 0.3, "
                                 "calibrated"),
    "digits_dynamic_calibrated_50": (430 / 450, 2 / 450,
                                     "digits CNN dynamically quantized (int8) at 50% MACs, "
                                     "calibrated"),
    "digits_qoperator_50": (371 / 450, 2 / 450,
                            "digits CNN quantized (QOperator, per-channel) at 50% MACs"),
    "keras_digits_original": (441 / 450, 1 / 450, "Keras digits CNN, original"),
    "keras_digits_calibrated_50": (441 / 450, 2 / 450, "Keras digits CNN at 50% MACs"),
    "sklearn_mlp_original": (438 / 450, 1 / 450, "scikit-learn MLP, original"),
    "sklearn_mlp_l2_50": (409 / 450, 2 / 450, "scikit-learn MLP at 50% MACs, magnitude"),
    "sklearn_mlp_calibrated_50": (440 / 450, 2 / 450, "scikit-learn MLP at 50% MACs, calibrated"),
    "magika_original": (105 / 120, 1 / 120, "magika on 120 files, original"),
    "magika_calibrated_70": (104 / 120, 1 / 120, "magika on 120 files at 70% MACs"),
    "minilm_original": (70 / 200, 2 / 200, "all-MiniLM-L6-v2, 200 pairs, original"),
    "minilm_l2_25": (58 / 200, 2 / 200, "all-MiniLM-L6-v2, 200 pairs, 25% of heads/MLP removed"),
    "minilm_l2_50": (44 / 200, 2 / 200, "all-MiniLM-L6-v2, 200 pairs, 50% of heads/MLP removed"),
    "minilm_depth_80": (54 / 200, 2 / 200, "all-MiniLM-L6-v2, 200 pairs, 4 of 12 sublayers "
                        "dropped (80% MACs target, depth only, calibrated)"),
    "ddddocr_original": (0.99, 1 / 100, "ddddocr common_old (dynamic int8) on 100 captchas"),
    "ddddocr_calibrated_90": (1.00, 1 / 100, "ddddocr common_old on 100 captchas at 90% MACs"),
    "ddddocr_lstm_original": (0.91, 1 / 100, "ddddocr common (LSTM) on 100 captchas"),
    "ddddocr_lstm_l2_10": (0.81, 1 / 100, "ddddocr common (LSTM) on 100 captchas at ratio 0.1"),
    "wired_table_original": (0.9862, 0.005, "wired_table_rec table detector, corner F1 on 24 "
                             "drawn tables, original"),
    "wired_table_calibrated_50": (0.9991, 0.005, "wired_table_rec table detector, corner F1 on "
                                  "24 drawn tables at 50% MACs, calibrated"),
    "rapidocr_original": (0.9938, 0.0025, "RapidOCR on 4 rendered pages, original"),
    "rapidocr_calibrated_70": (0.9875, 0.0025, "RapidOCR on 4 pages, all three at 70% MACs"),
}  # fmt: skip


def check_accuracy(name: str, measured: float) -> None:
    """Fail when ``measured`` is more than the margin below the README figure ``name``."""
    figure, margin, what = FIGURES[name]
    assert measured >= figure - margin - 1e-9, (
        f"{what}: {measured:.2%}, the README says {figure:.2%} (allowed down to "
        f"{figure - margin:.2%})"
    )
