"""Task accuracy at the same MACs, for ``tools/bench_peers.py``: onnxprune's allocations beside
Torch-Pruning on the models with real weights.

Each onnxprune cell prunes to the MACs target with calibration (the default importance,
fluctuation, and the least-squares refit) under one allocation (``uniform``, ``global``,
``latency``, ``one-sided``), and once more under ``global`` with ``criterion="obs"``; Torch-Pruning 1.6.1 prunes the same torch model by group L2 magnitude (local and
global) with its ratio searched to onnxprune's measured MACs (``tools/eval_criteria.py``'s
searches), exported and scored on the same data. Torch-Pruning needs the torch model: the
Keras digits CNN and RapidOCR's Paddle models have none (cells "n/a").

Tasks and data (calibration disjoint from evaluation but for MiniLM's unlabelled texts):

- digits CNN (models/digits_cnn.onnx): test accuracy on 450 images; calibration 256 training
  images; at 50% and 30% of MACs.
- all-MiniLM-L6-v2 (tests/minilm.py): retrieval top-1 of all 765 signature -> docstring
  pairs; calibration the 512 texts of pairs 128-383 (no pairing), in padded batches of 32 with
  ``calibration_mask="attention_mask"``; at 50% of MACs (Torch-Pruning: ratio
  0.5 of heads and MLP, which keeps about 50%).
- Keras digits CNN (tf2onnx): test accuracy; calibration 512 training images; at 50%.
- RapidOCR detector and recogniser (PaddleOCR via paddle2onnx): character accuracy of the
  whole pipeline on 8 rendered pages with that one model pruned; calibration from 8 other
  pages; at 70% of MACs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

#: (cell key, allocation, criterion; None: the default, fluctuation with data).
ALLOCATIONS = (("uniform", "uniform", None), ("global", "global", None),
               ("global_obs", "global", "obs"), ("latency", "latency", None),
               ("one_sided", "one-sided", None))


def _prune_cells(path, keep: float, calibration, score: Callable[[Path], float],
                 inputs, dims=None, mask: str | None = None) -> dict[str, dict]:  # fmt: skip
    """Each allocation's accuracy and measured MACs share at ``keep``."""
    import onnxprune

    cells = {}
    for key, allocation, criterion in ALLOCATIONS:
        result = onnxprune.prune(path, target_macs=keep, allocation=allocation,
                                 criterion=criterion, calibration=calibration,
                                 calibration_mask=mask, inputs=inputs, dims=dims)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            pruned = result.save(Path(tmp) / "model.onnx")
            accuracy = score(pruned)
        cells[key] = {"accuracy": accuracy, "verified": result.verification.passed,
                      "kept_macs": result.cost_after.macs / result.cost_before.macs}  # fmt: skip
        print(f"  {key}: {accuracy:.1%} at {cells[key]['kept_macs']:.0%} MACs", flush=True)
    return cells


def digits_rows() -> list[dict]:
    import eval_criteria

    from onnxprune.metrics import model_cost

    path, test, calibration = eval_criteria.digits_task()
    base_macs = model_cost(onnx.load(path), {"batch": 1}).macs
    original = eval_criteria._digits_accuracy(path, test)
    rows = []
    for keep in (0.5, 0.3):
        print(f"digits CNN at {keep:.0%} of MACs", flush=True)
        cells = _prune_cells(path, keep, calibration,
                             lambda p: eval_criteria._digits_accuracy(p, test),
                             [{"input": test["input"][:4]}])  # fmt: skip
        kept = cells["uniform"]["kept_macs"]
        for key, global_pruning in (("tp_local", False), ("tp_global", True)):
            tp = eval_criteria.torch_pruning_digits([kept], test, global_pruning=global_pruning)[0]
            cells[key] = {"accuracy": tp["accuracy"], "kept_macs": tp["macs"] / base_macs}
        rows.append({"task": "digits CNN, test accuracy (450 images)", "target": keep,
                     "original": original, "cells": cells, "torch": True})  # fmt: skip
    return rows


def minilm_rows() -> list[dict]:
    import eval_criteria

    import minilm

    path, queries, documents, calibration, dims = eval_criteria.minilm_task()

    def score(model) -> float:
        return minilm.retrieval_accuracy(minilm.embed(model, queries),
                                         minilm.embed(model, documents))  # fmt: skip

    print("all-MiniLM-L6-v2 at 50% of MACs", flush=True)
    cells = _prune_cells(path, 0.5, calibration, score, [minilm.tokenize(queries[:3])], dims,
                         mask=eval_criteria.MINILM_MASK)  # fmt: skip
    tp = eval_criteria.torch_pruning_minilm((0.5,), queries, documents, dims)[0]
    cells["tp_local"] = {"accuracy": tp["accuracy"], "kept_macs": tp["kept_macs"]}
    return [{"task": f"all-MiniLM-L6-v2, retrieval top-1 ({len(queries)} signature -> "
             "docstring pairs)", "target": 0.5, "original": score(path), "cells": cells,
             "torch": True}]  # fmt: skip


def keras_rows() -> list[dict]:
    import frameworks
    from onnxprune.sessions import open_session

    x_train, x_test, _, y_test = frameworks.digits_split()
    x_test, x_train = x_test.reshape(-1, 8, 8, 1), x_train.reshape(-1, 8, 8, 1)
    path = frameworks.keras_export("digits_cnn")
    feed = onnx.load(path).graph.input[0].name

    def score(model) -> float:
        session = open_session(str(model), threads=0)
        return float((session.run(None, {feed: x_test})[0].argmax(1) == y_test).mean())

    print("Keras digits CNN at 50% of MACs", flush=True)
    cells = _prune_cells(path, 0.5, [{feed: x_train[:512]}], score, [{feed: x_test[:8]}])
    return [{"task": "Keras digits CNN (tf2onnx), test accuracy", "target": 0.5,
             "original": score(path), "cells": cells, "torch": False}]  # fmt: skip


def rapidocr_rows(pages: int = 8) -> list[dict]:
    import ocr

    calibration = ocr.model_feeds(ocr.pages(pages, split=0))
    evaluate = ocr.pages(pages, split=1)
    original = ocr.character_accuracy(evaluate, ocr.read_pages(evaluate))
    rows = []
    for role, name in (("det", "detector (DBNet)"), ("rec", "recogniser (SVTR)")):
        print(f"RapidOCR {role} at 70% of MACs", flush=True)

        def score(pruned: Path, role: str = role) -> float:
            return ocr.character_accuracy(evaluate, ocr.read_pages(evaluate, {role: pruned}))

        cells = _prune_cells(ocr.model_file(role), 0.7, calibration[role], score,
                             calibration[role][:1])  # fmt: skip
        rows.append({"task": f"RapidOCR {name}, pipeline character accuracy ({pages} pages)",
                     "target": 0.7, "original": original, "cells": cells,
                     "torch": False})  # fmt: skip
    return rows


def accuracy_rows() -> list[dict]:
    return digits_rows() + minilm_rows() + keras_rows() + rapidocr_rows()


COLUMNS = (("uniform", "onnxprune uniform"), ("global", "onnxprune global"),
           ("global_obs", "onnxprune global, obs"), ("latency", "onnxprune latency"),
           ("one_sided", "onnxprune one-sided"), ("tp_local", "Torch-Pruning local"),
           ("tp_global", "Torch-Pruning global"))  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = ["Task accuracy at the same MACs (no finetuning): onnxprune calibrated (fluctuation + "
             "refit; `--criterion obs` + refit in the obs column) under each allocation, "
             "Torch-Pruning 1.6.1 by group L2 magnitude on the "
             "same torch model with its ratio searched to onnxprune's MACs. Cells: accuracy "
             "(MACs kept); n/a: no torch model; -: not run (Torch-Pruning's global head "
             "pruning on BERT is not set up here).", "",
             "| task | MACs target | original | " + " | ".join(c for _, c in COLUMNS) + " |",
             "|---|---:|---:|" + "---:|" * len(COLUMNS)]  # fmt: skip
    for row in rows:
        cells = [f"{c['accuracy']:.1%} ({c['kept_macs']:.0%})" if (c := row["cells"].get(k))
                 else "-" if row["torch"] else "n/a" for k, _ in COLUMNS]  # fmt: skip
        lines.append(f"| {row['task']} | {row['target']:.0%} | {row['original']:.1%} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"
