"""Allocation strategies side by side: speed per MAC removed on the torchvision CNN zoo.

For every CNN of the zoo (the torchscript export the tests cache, its own input size) and
one MACs target, each strategy (``uniform``, ``global``, ``latency``) prunes to the target by
L2 magnitude (no data); the original and the three pruned models are timed together in
onnxruntime (2 threads, alternating blocks, all graph optimisations). Columns: MACs kept,
speedup, speedup / MACs ratio = speedup x MACs kept (1.0: time falls as fast as MACs), prune
wall time. Writes ``tools/results/bench_allocation.{json,md}``.

    python tools/bench_allocation.py [--target 0.5] [--models resnet18 mobilenet_v2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now
from bench_peers import MODELS  # noqa: E402 - the same CNNs as the peer comparison

STRATEGIES = ("uniform", "global", "latency")


def bench(name: str, target: float) -> dict:
    import onnxprune
    import zoo
    from onnxprune.latency import measure_latency

    path = zoo.export(name, "torchscript")
    feed = {"input": zoo.sample_input(name)}
    rows, models = [], [str(path)]
    for strategy in STRATEGIES:
        start = time.perf_counter()
        result = onnxprune.prune(path, target_macs=target, allocation=strategy, inputs=[feed])
        wall = time.perf_counter() - start
        models.append(result.to_proto())
        rows.append({"allocation": strategy, "prune_s": wall,
                     "macs_kept": result.cost_after.macs / result.cost_before.macs,
                     "verified": result.verification.passed})  # fmt: skip
    stats = measure_latency(models, feed, repeats=20, blocks=5)
    for row, st in zip(rows, stats[1:], strict=True):
        row["latency_ms"] = st.median_ms
        row["speedup"] = stats[0].median_ms / st.median_ms
        row["speedup_per_macs"] = row["speedup"] * row["macs_kept"]
        print(f"{name:20} {row['allocation']:8} MACs {row['macs_kept']:.1%} speedup "
              f"{row['speedup']:.2f}x ratio {row['speedup_per_macs']:.2f}", flush=True)
    return {"model": name, "input": list(feed["input"].shape), "target_macs": target,
            "latency_ms_before": stats[0].median_ms, "rows": rows}  # fmt: skip


def markdown(report: dict) -> str:
    lines = [f"Target {report['target']:.0%} of MACs, L2 magnitude, no data; one run on this "
             "machine (2 onnxruntime threads), `python tools/bench_allocation.py`. Cells: "
             "speedup (speedup / MACs ratio).", "",
             "| model | input | ms before | " + " | ".join(STRATEGIES) + " |",
             "|---|---|---:|" + "---:|" * len(STRATEGIES)]  # fmt: skip
    for m in report["models"]:
        cells = [f"{r['speedup']:.2f}x ({r['speedup_per_macs']:.2f})" for r in m["rows"]]
        lines.append(f"| {m['model']} | {'x'.join(map(str, m['input']))} | "
                     f"{m['latency_ms_before']:.2f} | " + " | ".join(cells) + " |")  # fmt: skip
    medians = [statistics.median(m["rows"][k]["speedup_per_macs"] for m in report["models"])
               for k in range(len(STRATEGIES))]  # fmt: skip
    lines.append("| median | | | " + " | ".join(f"({v:.2f})" for v in medians) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    args = parser.parse_args(argv)
    report = {"target": args.target, "models": [bench(m, args.target) for m in args.models]}
    _results.write("bench_allocation", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
