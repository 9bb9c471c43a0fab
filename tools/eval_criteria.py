"""Accuracy versus kept MACs for every criterion, with and without compensation, no finetuning.

Digits CNN (models/digits_cnn.onnx; calibration: 256 training images; metric: test accuracy) and
all-MiniLM-L6-v2 (tests/minilm.py; calibration: 512 texts of pairs 128-383, unlabelled, in
padded batches of 32 with ``calibration_mask="attention_mask"``; metric: retrieval top-1
over all pairs, those included; ratios 0.125-0.625, about 89% to 40% of the MACs); on both
also the global (and on the digits CNN the latency) allocation, the ``obs`` criterion under
the global allocation, and the sequential refit (``sequential_refit=True``). Side by side on
the digits CNN: Torch-Pruning 1.6.1 (``MetaPruner`` + ``GroupMagnitudeImportance(p=2)``,
local and ``global_pruning``) on the same PyTorch model, retrained here with the bundled model's recipe
(its predictions are checked against the bundled ONNX), with its ``pruning_ratio`` searched so
that its MACs match onnxprune's at each point.

    python tools/eval_criteria.py --out tools/results          # both models
    python tools/eval_criteria.py --models digits
    python tools/eval_criteria.py --criteria obs   # rerun one criterion's rows into the last
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
import _results  # noqa: E402 - the tools folder is on the path now

KEEP = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
#: (criterion, compensate, refit (False, True or "sequential"), allocation)
CONFIGS = [("l2", False, False, "uniform"), ("l1", False, False, "uniform"),
           ("random", False, False, "uniform"), ("activation", False, False, "uniform"),
           ("fluctuation", False, False, "uniform"), ("fluctuation", True, False, "uniform"),
           ("fluctuation", False, True, "uniform"), ("fluctuation", True, True, "uniform"),
           ("wanda", False, False, "uniform"), ("wanda", True, False, "uniform"),
           ("fluctuation", False, True, "global"),
           ("fluctuation", False, True, "latency"),
           ("fluctuation", False, "sequential", "uniform"),
           ("fluctuation", False, "sequential", "global"),
           ("obs", False, True, "global"),
           ("fluctuation", False, "sequential", "latency")]  # fmt: skip
#: MiniLM: the same, fewer (each prune runs the model over the calibration data again)
MINILM_CONFIGS = [("l2", False, False, "uniform"), ("activation", False, False, "uniform"),
                  ("fluctuation", False, False, "uniform"), ("fluctuation", True, False, "uniform"),
                  ("fluctuation", False, True, "uniform"), ("fluctuation", True, True, "uniform"),
                  ("wanda", False, False, "uniform"),
                  ("fluctuation", False, "sequential", "uniform"),
                  ("fluctuation", False, True, "global"),
                  ("fluctuation", False, "sequential", "global"),
                  ("obs", False, True, "global")]  # fmt: skip


def _label(row: dict) -> str:
    extras = [name for name in ("compensate", "refit") if row.get(name)]
    if row.get("refit") == "sequential":
        extras[-1] = "sequential refit"
    allocation = row.get("allocation", "uniform")
    return (row["criterion"] + "".join(f" + {e}" for e in extras)
            + ("" if allocation == "uniform" else f", {allocation} allocation"))


def _digits_accuracy(model, test) -> float:
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test["input"]})[0]
    return float((logits.argmax(1) == test["label"]).mean())


def torch_pruning_digits(keep_macs: list[float], test, global_pruning: bool = False,
                         ) -> list[dict]:  # fmt: skip
    """Torch-Pruning magnitude pruning of the retrained DigitsCNN at each onnxprune MACs
    (local: each layer by the ratio; ``global_pruning``: one threshold over all groups)."""
    import tempfile

    import torch
    import torch_pruning as tp
    from train_digits import DigitsCNN, load_split, seed_everything, train

    from onnxprune.metrics import model_cost

    seed_everything(0)
    x_train, x_test, y_train, _ = load_split()
    base = DigitsCNN()
    train(base, x_train, y_train, 30, 0)
    bundled = ort.InferenceSession(str(ROOT / "models" / "digits_cnn.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    with torch.no_grad():
        same = (base(torch.from_numpy(x_test)).argmax(1).numpy()
                == bundled.run(None, {"input": x_test})[0].argmax(1)).all()  # fmt: skip
    example = torch.from_numpy(x_test[:1])
    base_macs, _ = tp.utils.count_ops_and_params(base, example)
    rows = []

    def pruned_at(ratio: float):
        model = DigitsCNN()
        model.load_state_dict(base.state_dict())
        model.eval()
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, ignored_layers=[model.fc2], global_pruning=global_pruning)
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        return model, macs / base_macs

    for target in keep_macs:
        lo, hi = 0.0, 0.95
        for _ in range(14):
            mid = (lo + hi) / 2
            _, kept = pruned_at(mid)
            lo, hi = (mid, hi) if kept > target else (lo, mid)
        ratio = min((lo, hi), key=lambda r: abs(pruned_at(r)[1] - target))  # closest MACs
        model, kept = pruned_at(ratio)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tp.onnx"
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}})  # fmt: skip
            proto = onnx.load(path)
        macs = model_cost(proto, {"batch": 1}).macs
        rows.append({"target_macs": target, "tp_kept_macs": kept, "macs": macs,
                     "accuracy": _digits_accuracy(proto, test), "pruning_ratio": ratio,
                     "same_model_as_bundled": bool(same)})  # fmt: skip
        print(f"torch-pruning keep {target:.2f}: ratio {ratio:.3f} accuracy "
              f"{rows[-1]['accuracy']:.1%}", flush=True)  # fmt: skip
    return rows


def digits_task() -> tuple[Path, dict, list[dict]]:
    """The bundled digits CNN, its test split and its calibration (256 training images)."""
    from train_digits import load_split

    test = np.load(ROOT / "models" / "digits_test.npz")
    return ROOT / "models" / "digits_cnn.onnx", test, [{"input": load_split()[0][:256]}]


def digits(criteria: list[str] | None = None) -> dict:
    """Every configuration at every MACs share (only ``criteria``'s, without Torch-Pruning,
    where given: :func:`merged` puts them into the last report)."""
    import onnxprune
    from onnxprune.importance import DATA_CRITERIA

    path, test, calibration = digits_task()
    configs = [c for c in CONFIGS if criteria is None or c[0] in criteria]
    rows = []
    for keep in KEEP:
        for criterion, compensate, refit, allocation in configs:
            data = calibration if criterion in DATA_CRITERIA else None
            result = onnxprune.prune(path, target_macs=keep, criterion=criterion,
                                     calibration=data, compensate=compensate,
                                     refit=bool(refit), sequential_refit=refit == "sequential",
                                     allocation=allocation)  # fmt: skip
            rows.append({"target_macs": keep, "criterion": criterion, "compensate": compensate,
                         "refit": refit, "allocation": allocation,
                         "macs": result.cost_after.macs,
                         "kept_macs": result.cost_after.macs / result.cost_before.macs,
                         "accuracy": _digits_accuracy(result.to_proto(), test),
                         "verified": result.verification.passed})  # fmt: skip
        print(f"digits keep {keep}: " + ", ".join(
            f"{_label(r)} {r['accuracy']:.1%}" for r in rows[-len(configs):]), flush=True)
    if criteria is not None:
        return {"rows": rows}
    kept = [next(r["kept_macs"] for r in rows if r["target_macs"] == k) for k in KEEP]
    return {"model": "digits CNN", "metric": "test accuracy",
            "original": _digits_accuracy(path, test), "rows": rows,
            "torch_pruning": torch_pruning_digits(kept, test),
            "torch_pruning_global": torch_pruning_digits(kept, test, global_pruning=True)}  # fmt: skip


def torch_pruning_minilm(ratios, queries, documents, dims) -> list[dict]:
    """Torch-Pruning on the same BertModel: heads (num_heads, prune_num_heads) and MLP at
    each ratio, residual width kept (the layers writing it are ignored), as onnxprune does."""
    import tempfile

    import onnx
    import torch
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    import minilm
    from onnxprune.metrics import model_cost

    example = {k: torch.from_numpy(v) for k, v in minilm.tokenize(queries[:2]).items()}
    base_macs = model_cost(onnx.load(minilm.export()), dims).macs
    rows = []
    for ratio in ratios:
        bert = minilm.load_bert()
        heads = {}
        for m in bert.modules():
            if isinstance(m, BertSelfAttention):
                heads[m.query] = heads[m.key] = heads[m.value] = m.num_attention_heads
        ignored = [bert.embeddings, bert.pooler]
        for layer in bert.encoder.layer:
            ignored += [layer.attention.output.dense, layer.output.dense]
        pruner = tp.pruner.MetaPruner(
            bert, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, ignored_layers=ignored, num_heads=heads, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=ratio)
        pruner.step()
        for m in bert.modules():
            if isinstance(m, BertSelfAttention):
                m.num_attention_heads = pruner.num_heads[m.query]
                m.all_head_size = m.query.out_features
        with tempfile.TemporaryDirectory() as tmp:
            path = minilm.export_module(bert, Path(tmp) / "tp.onnx")
            macs = model_cost(onnx.load(path), dims).macs
            emb = minilm.embed(path, queries), minilm.embed(path, documents)
        rows.append({"ratio": ratio, "kept_macs": macs / base_macs,
                     "accuracy": minilm.retrieval_accuracy(*emb)})  # fmt: skip
        print(f"torch-pruning ratio {ratio}: retrieval {rows[-1]['accuracy']:.1%}", flush=True)
    return rows


#: The retrieval task's calibration marks padding with this input.
MINILM_MASK = "attention_mask"
#: MiniLM's uniform ratios (about 89% to 40% of the MACs), onnxprune's and Torch-Pruning's.
MINILM_RATIOS = (0.125, 0.25, 0.375, 0.5, 0.625)


def minilm_task() -> tuple[Path, list[str], list[str], list[dict], dict]:
    """all-MiniLM-L6-v2's retrieval task: the export, queries and documents (every pair), the
    calibration (the 512 texts of pairs 128-383, unlabelled, padded batches of 32, padding
    marked by ``MINILM_MASK``) and the dims costs count at. 256 texts gave 34.6-40.2% at ratio
    0.5 depending on which 128 pairs (fluctuation + refit); 512 narrow that spread."""
    import minilm

    pairs = minilm.pairs()
    queries, documents = [q for q, _ in pairs], [d for _, d in pairs]
    texts = queries[128:384] + documents[128:384]
    calibration = [minilm.tokenize(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    dims = {"batch": 1, "sequence": minilm.MAX_TOKENS}
    return minilm.export(), queries, documents, calibration, dims


def minilm_eval(criteria: list[str] | None = None) -> dict:
    """Every configuration at every ratio (only ``criteria``'s, without Torch-Pruning, where
    given: :func:`merged` puts them into the last report)."""
    import minilm
    import onnxprune

    path, queries, documents, calibration, dims = minilm_task()
    base = minilm.embed(path, queries), minilm.embed(path, documents)
    configs = [c for c in MINILM_CONFIGS if criteria is None or c[0] in criteria]
    rows = []
    # A uniform ratio removes the same heads/neurons count whatever the criterion, so every
    # uniform configuration of a ratio has the same MACs (no search needed); the other
    # allocations aim at that MACs share.
    for ratio in MINILM_RATIOS:  # the Torch-Pruning rows use the same ratios
        kept = None
        if configs[0][3] != "uniform":  # the share a uniform ratio keeps, as the first row's
            result = onnxprune.prune(path, ratio=ratio, dims=dims, verify=False)
            kept = result.cost_after.macs / result.cost_before.macs
        for criterion, compensate, refit, allocation in configs:
            data = calibration if criterion != "l2" else None
            how = ({"ratio": ratio} if allocation == "uniform"
                   else {"target_macs": kept, "allocation": allocation})  # fmt: skip
            result = onnxprune.prune(path, **how, criterion=criterion, dims=dims,
                                     calibration=data, compensate=compensate,
                                     calibration_mask=None if data is None else MINILM_MASK,
                                     refit=bool(refit), sequential_refit=refit == "sequential",
                                     inputs=[minilm.tokenize(queries[:3])])  # fmt: skip
            if kept is None:
                kept = result.cost_after.macs / result.cost_before.macs
            keep = round(kept, 2)
            pruned = result.to_proto()
            emb = minilm.embed(pruned, queries), minilm.embed(pruned, documents)
            cosine = float(np.mean(np.sum(np.concatenate(emb) * np.concatenate(base), axis=1)))
            rows.append({"target_macs": keep, "criterion": criterion, "compensate": compensate,
                         "refit": refit, "allocation": allocation,
                         "kept_macs": result.cost_after.macs / result.cost_before.macs,
                         "accuracy": minilm.retrieval_accuracy(*emb), "mean_cosine": cosine,
                         "verified": result.verification.passed})  # fmt: skip
        print(f"minilm ratio {ratio}: " + ", ".join(
            f"{_label(r)} {r['accuracy']:.1%}" for r in rows[-len(configs):]), flush=True)
    if criteria is not None:
        return {"rows": rows}
    tp_rows = torch_pruning_minilm(MINILM_RATIOS, queries, documents, dims)
    keeps = sorted({r["target_macs"] for r in rows}, reverse=True)
    for row, keep in zip(tp_rows, keeps, strict=True):
        row["target_macs"] = keep
    return {"model": "all-MiniLM-L6-v2", "metric": "retrieval top-1",
            "original": minilm.retrieval_accuracy(*base), "rows": rows,
            "torch_pruning": tp_rows}


def markdown(report: dict) -> str:
    rows = report["rows"]
    keeps = sorted({r["target_macs"] for r in rows}, reverse=True)
    labels = list(dict.fromkeys(_label(r) for r in rows))
    head = " | ".join(f"{k:.0%}" for k in keeps)
    lines = [f"{report['model']}: {report['metric']} (original {report['original']:.1%}) "
             "at the kept share of MACs, no finetuning.", "",
             f"| criterion | {head} |", "|---|" + "---:|" * len(keeps)]  # fmt: skip
    for label in labels:
        cells = [next(r["accuracy"] for r in rows if r["target_macs"] == k and _label(r) == label)
                 for k in keeps]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    for key, label in TP_ROWS:
        if report.get(key):
            cells = [f"{r['accuracy']:.1%} ({r.get('tp_kept_macs', r.get('kept_macs', 0)):.0%})"
                     for r in report[key]]  # fmt: skip
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(report.get(key) for key, _ in TP_ROWS):
        lines += ["", "Torch-Pruning cells: accuracy (the MACs it really kept, its ratio "
                  "searched to the closest)."]  # fmt: skip
    return "\n".join(lines) + "\n"


#: Report keys of the Torch-Pruning rows and their labels.
TP_ROWS = [("torch_pruning", "Torch-Pruning 1.6.1 (group L2 magnitude, local)"),
           ("torch_pruning_global", "Torch-Pruning 1.6.1 (group L2 magnitude, global)")]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    rows = report["rows"]
    for label in dict.fromkeys(_label(r) for r in rows):
        mine = [r for r in rows if _label(r) == label]
        ax.plot([r["kept_macs"] for r in mine], [r["accuracy"] for r in mine],
                "o--" if "+" in label else "o-", label=label)
    for (key, label), style in zip(TP_ROWS, ("k^-", "kv--"), strict=True):
        tp_rows = report.get(key)
        if tp_rows:
            ax.plot([r.get("tp_kept_macs", r.get("kept_macs")) for r in tp_rows],
                    [r["accuracy"] for r in tp_rows], style, label=label)  # fmt: skip
    ax.axhline(report["original"], color="grey", lw=0.8)
    ax.set_xlabel("MACs kept")
    ax.set_ylabel(report["metric"])
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{report['model']}, no finetuning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merged(last: Path, rows: list[dict], criteria: list[str]) -> dict:
    """The report at ``last`` with the rows of ``criteria`` replaced by ``rows``."""
    import json

    report = json.loads(last.read_text())
    report["rows"] = [r for r in report["rows"] if r["criterion"] not in criteria] + rows
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits", "minilm"],
                        choices=["digits", "minilm"])  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    parser.add_argument("--criteria", nargs="+", metavar="NAME",
                        help="rerun only these criteria's rows into the last report (their "
                        "rows replaced, the others and Torch-Pruning's kept)")
    args = parser.parse_args(argv)
    for name in args.models:
        report = digits(args.criteria) if name == "digits" else minilm_eval(args.criteria)
        if args.criteria:
            report = merged(args.out / f"criteria_{name}.json", report["rows"], args.criteria)
        _results.write(f"criteria_{name}", report, markdown(report), args.out)
        plot(report, args.out / f"criteria_{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
