"""Models from other frameworks, pruned without finetuning: MACs cut and task accuracy.

scikit-learn MLPClassifier (skl2onnx) on the digits test split; magika (Keras/JAX via
tf2onnx, real weights from PyPI) on real files of this machine (tests/frameworks.py); RapidOCR
(PaddleOCR via paddle2onnx, real weights from PyPI) reading rendered pages (tests/ocr.py);
calibration always from disjoint data. Writes tools/results/frameworks.{json,md}.

    python tools/eval_frameworks.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now


def _groups(result) -> str:
    """Exact groups by size (units; heads as "8 heads x 45"); long lists as a count and range."""
    groups = sorted((g for g in result.groups if g.exact), key=lambda g: g.n_atoms)
    plain = [g.n_atoms for g in groups if g.atom_size == 1]
    multi = [f"{g.n_atoms} heads x {g.atom_size}" for g in groups if g.atom_size > 1]
    if len(plain) > 4:
        plain_text = [f"{len(plain)} groups of {plain[0]}-{plain[-1]} channels"]
    else:
        plain_text = [str(n) for n in plain]
    return ", ".join(plain_text + multi)


def _row(framework, model, result, before, after, note) -> dict:
    return {"framework": framework, "model": model, "groups": _groups(result),
            "macs_kept": result.cost_after.macs / result.cost_before.macs,
            "accuracy_before": before, "accuracy_after": after,
            "verified": result.verification.passed, "note": note}  # fmt: skip


def sklearn_row() -> list[dict]:
    import frameworks
    import onnxprune

    proto, x_train, x_test, y_test = frameworks.sklearn_digits_mlp()

    def accuracy(model) -> float:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        return float((session.run(None, {"X": x_test})[0] == y_test).mean())

    rows = []
    for data, note in ((None, "magnitude (no data)"),
                       ([{"X": x_train[:512]}], "calibrated: 512 training images")):  # fmt: skip
        result = onnxprune.prune(proto, target_macs=0.5, calibration=data,
                                 inputs=[{"X": x_test[:32]}])  # fmt: skip
        rows.append(_row("scikit-learn (skl2onnx)", "MLPClassifier 64-128-64-10, digits", result,
                         accuracy(proto), accuracy(result.to_proto()), note))  # fmt: skip
    return rows


def keras_rows() -> list[dict]:
    """The Keras digits CNN (trained here) via tf2onnx, directly and through TFLite."""
    import frameworks
    import onnxprune

    x_train, x_test, _, y_test = frameworks.digits_split()
    x_test, x_train = x_test.reshape(-1, 8, 8, 1), x_train.reshape(-1, 8, 8, 1)

    def accuracy(model, feed: str) -> float:
        from onnxprune.sessions import open_session

        session = open_session(model, threads=0)
        return float((session.run(None, {feed: x_test})[0].argmax(1) == y_test).mean())

    rows = []
    for name, framework in (("digits_cnn", "Keras via tf2onnx"),
                            ("digits_cnn_tflite", "TFLite via tf2onnx")):  # fmt: skip
        path = frameworks.keras_export(name)
        feed = onnx.load(path).graph.input[0].name
        for data, note in ((None, "magnitude (no data)"),
                           ([{feed: x_train[:512]}], "calibrated: 512 training images")):
            result = onnxprune.prune(path, target_macs=0.5, calibration=data,
                                     inputs=[{feed: x_test[:8]}])  # fmt: skip
            rows.append(_row(framework, "CNN 32-64-128 trained here on digits (Keras 3)",
                             result, accuracy(str(path), feed), accuracy(result.model, feed),
                             note))  # fmt: skip
    return rows


def magika_rows() -> list[dict]:
    import frameworks
    import onnxprune

    evaluate = frameworks.files(per_label=12, split=0)
    paths, expected = [p for p, _ in evaluate], np.array([label for _, label in evaluate])
    model = frameworks.magika_model_dir() / "model.onnx"
    calibration = frameworks.magika_features([p for p, _ in frameworks.files(12, split=1)])
    before = float(np.mean(np.array(frameworks.magika_labels(paths)) == expected))
    rows = []
    for keep, data, note in ((0.8, None, "magnitude (no data)"),
                             (0.8, calibration, "calibrated: features of 239 other files"),
                             (0.7, calibration, "calibrated: features of 239 other files")):
        result = onnxprune.prune(model, target_macs=keep, calibration=data,
                                 inputs=[{"bytes": calibration[0]["bytes"][:4]}])  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            pruned = result.save(Path(tmp) / "model.onnx")
            after = float(np.mean(np.array(frameworks.magika_labels(paths, pruned)) == expected))
        rows.append(_row("Keras/JAX via tf2onnx", f"magika {model.parent.name}, "
                         f"{len(paths)} real files, 20 types", result, before, after, note))
    return rows


def rapidocr_rows(pages: int = 8) -> list[dict]:
    """Each model alone, then all three, at 70% (and the recogniser at 50%) of the MACs;
    accuracy of the whole pipeline on ``pages`` pages, calibrated on as many others."""
    import ocr
    import onnxprune

    calibration = ocr.model_feeds(ocr.pages(pages, split=0))
    evaluate = ocr.pages(pages, split=1)
    before = ocr.character_accuracy(evaluate, ocr.read_pages(evaluate))
    names = {"det": "PP-OCRv4 text detection (DBNet)", "cls": "PP-OCR v2 direction classifier",
             "rec": "PP-OCRv4 recognition (SVTR, 8 heads)"}  # fmt: skip
    rows, pruned = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for role, keep, data in (("det", 0.7, None), ("det", 0.7, True), ("cls", 0.7, True),
                                 ("rec", 0.7, None), ("rec", 0.7, True), ("rec", 0.5, True)):
            feeds = calibration[role] if data else None
            result = onnxprune.prune(ocr.model_file(role), target_macs=keep, calibration=feeds,
                                     inputs=calibration[role][:1])  # fmt: skip
            path = result.save(Path(tmp) / f"{role}-{keep}-{bool(data)}.onnx")
            if data and keep == 0.7:
                pruned[role] = (path, result)
            after = ocr.character_accuracy(evaluate, ocr.read_pages(evaluate, {role: path}))
            note = (f"calibrated: {len(feeds)} batches from {pages} other pages" if data
                    else "magnitude (no data)")  # fmt: skip
            rows.append(_row("Paddle via paddle2onnx", f"RapidOCR {names[role]}", result,
                             before, after, note))  # fmt: skip
        after = ocr.character_accuracy(
            evaluate, ocr.read_pages(evaluate, {r: p for r, (p, _) in pruned.items()}))
        macs = [(r.cost_before.macs, r.cost_after.macs) for _, r in pruned.values()]
        rows.append({"framework": "Paddle via paddle2onnx",
                     "model": "RapidOCR pipeline, all three models pruned",
                     "groups": "as above", "macs_kept": sum(a for _, a in macs) / sum(
                         b for b, _ in macs), "accuracy_before": before, "accuracy_after": after,
                     "verified": all(r.verification.passed for _, r in pruned.values()),
                     "note": "calibrated (each model as above)"})  # fmt: skip
    return rows


def main() -> int:
    rows = sklearn_row() + keras_rows() + magika_rows() + rapidocr_rows()
    lines = ["| framework | model | groups (exact) | MACs kept | accuracy before → after | "
             "importance | oracle |", "|---|---|---|---:|---:|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['framework']} | {r['model']} | {r['groups']} | {r['macs_kept']:.0%} "
                     f"| {r['accuracy_before']:.1%} → {r['accuracy_after']:.1%} | {r['note']} "
                     f"| {'passed' if r['verified'] else 'FAILED'} |")
    _results.write("frameworks", rows, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
