"""The demo: prune the bundled digits CNN to about half its MACs and show what changed.

Prints params, MACs, onnxruntime latency and held-out test accuracy before and after (no
fine-tuning), twice: by weight magnitude (no data) and calibrated on 256 training images
(``models/digits_calib.npz``: FLAP fluctuation + least-squares refit); the oracle's verdict;
and where the calibrated model and its report were written.
Run it with ``make demo`` (which makes its own virtualenv) or ``python tools/demo.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx_ir as ir
from rich.console import Console
from rich.table import Table

import onnxprune
from onnxprune.latency import measure_latency
from onnxprune.report import build_report, write_report
from onnxprune.sessions import open_session

ROOT = Path(__file__).resolve().parent.parent


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on the whole test split (one batched run)."""
    logits = open_session(model).run(None, {"input": images})[0]
    return float(np.mean(logits.argmax(axis=1) == labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "digits_cnn.onnx")
    parser.add_argument("--data", type=Path, default=ROOT / "models" / "digits_test.npz")
    parser.add_argument("--calib", type=Path, default=ROOT / "models" / "digits_calib.npz")
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args(argv)
    console = Console()
    test = np.load(args.data)
    images, labels = test["input"].astype(np.float32), test["label"]

    console.print(f"[bold]onnxprune demo[/] — {args.model.name}, keep {args.target_macs:.0%} of MACs")
    magnitude = onnxprune.prune(args.model, target_macs=args.target_macs, dims={"batch": 1},
                                inputs=[{"input": images[:16]}])
    result = onnxprune.prune(args.model, target_macs=args.target_macs, dims={"batch": 1},
                             inputs=[{"input": images[:16]}], calibration=args.calib,
                             refit=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out_model = result.save(args.out / f"{args.model.stem}.pruned.onnx")
    original = ir.to_proto(result.original)
    pruned = result.to_proto()
    one = {"input": images[:1]}
    before_ms, after_ms = (s.median_ms for s in measure_latency([original, pruned], one))
    report = build_report(result, latency={"before_ms": before_ms, "after_ms": after_ms})
    written = write_report(report, args.out / "report")

    table = Table(title="digits CNN, pruned without fine-tuning")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right" if col else "left")
    rows = [
        ("parameters", result.cost_before.params, result.cost_after.params),
        ("MACs", result.cost_before.macs, result.cost_after.macs),
    ]
    for name, a, b in rows:
        table.add_row(name, f"{a:,}", f"{b:,}", f"{b / a:.0%}")
    table.add_row("ORT latency (batch 1, median)", f"{before_ms:.3f} ms", f"{after_ms:.3f} ms",
                  f"{before_ms / after_ms:.2f}x faster")
    acc_a, acc_b = accuracy(original, images, labels), accuracy(pruned, images, labels)
    acc_m = accuracy(magnitude.to_proto(), images, labels)
    table.add_row("test accuracy, L2 magnitude (no data)", f"{acc_a:.2%}", f"{acc_m:.2%}",
                  f"{(acc_m - acc_a) * 100:+.2f} pts")
    table.add_row("test accuracy, calibrated (fluctuation + refit)", f"{acc_a:.2%}",
                  f"{acc_b:.2%}", f"{(acc_b - acc_a) * 100:+.2f} pts")
    console.print(table)
    console.print(f"{len(labels)} held-out images; calibration: {args.calib.name} (256 training "
                  "images, disjoint from the test split)")
    v = result.verification
    verdict = "[green]passed[/]" if v.passed else "[red]FAILED[/]"
    console.print(f"verification (pruned == masked original): {verdict}, "
                  f"max |diff| {v.max_abs_diff:.2e} over {v.samples} batch(es)")
    console.print(f"uniform ratio chosen: {result.ratio:.3f}; groups pruned: "
                  f"{len(result.plan.removed)} of {sum(g.prunable for g in result.groups)} prunable")
    console.print(f"pruned model: {out_model}")
    console.print(f"report: {', '.join(str(p) for p in written)}")
    return 0 if v.passed and magnitude.verification.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
