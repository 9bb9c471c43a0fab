"""Models from other frameworks, pruned without finetuning: MACs cut and task accuracy.

scikit-learn MLPClassifier (skl2onnx) on the digits test split; magika (Keras/JAX via
tf2onnx, real weights from PyPI) on real files of this machine (tests/frameworks.py), with
calibration from disjoint data. Writes tools/results/frameworks.{json,md}.

    python tools/eval_frameworks.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _row(framework, model, result, before, after, note) -> dict:
    groups = [g for g in result.groups if g.exact]
    return {"framework": framework, "model": model,
            "groups": ", ".join(str(g.n_atoms) for g in sorted(groups, key=lambda g: g.n_atoms)),
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


def main() -> int:
    rows = sklearn_row() + magika_rows()
    lines = ["| framework | model | groups (exact) | MACs kept | accuracy before → after | "
             "importance | oracle |", "|---|---|---|---:|---:|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['framework']} | {r['model']} | {r['groups']} | {r['macs_kept']:.0%} "
                     f"| {r['accuracy_before']:.1%} → {r['accuracy_after']:.1%} | {r['note']} "
                     f"| {'passed' if r['verified'] else 'FAILED'} |")
    out = ROOT / "tools" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "frameworks.json").write_text(json.dumps(rows, indent=1))
    (out / "frameworks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
