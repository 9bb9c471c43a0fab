"""Benchmark pruning on the torchvision zoo: JSON + markdown for the README.

For every model (and exporter): groups found, prunable share, prune wall time and peak RSS
(measured in a child process per model), params and MACs before/after, onnxruntime latency
before/after (2 threads, warm-up, median of alternating blocks) and speedup / MACs ratio.

    python tools/bench_zoo.py --ratio 0.5 --out tools/results
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). ru_maxrss would not do: Linux carries the
    parent's peak across exec into a spawned child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prune_one(path: str, ratio: float, out: str, queue) -> None:
    import onnxprune

    start = time.perf_counter()
    analysis = onnxprune.analyze(path)
    result = onnxprune.prune(path, ratio=ratio)
    wall = time.perf_counter() - start
    result.save(out)
    peak_mb = _peak_rss_mb()
    queue.put({
        "groups": len(analysis.groups), "prunable": len(analysis.prunable),
        "share": analysis.prunable_share(), "prune_s": wall, "peak_rss_mb": peak_mb,
        "params_before": result.cost_before.params, "params_after": result.cost_after.params,
        "macs_before": result.cost_before.macs, "macs_after": result.cost_after.macs,
        "verified": bool(result.verification and result.verification.passed),
        "max_abs_diff": result.verification.max_abs_diff if result.verification else None,
    })  # fmt: skip


def bench(name: str, exporter: str, ratio: float, work: Path, threads: int, size: int) -> dict:
    import zoo
    from onnxprune.latency import measure_latency

    path = zoo.export(name, exporter, size=size)
    out = work / f"{name}-{exporter}.pruned.onnx"
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_prune_one, args=(str(path), ratio, str(out), queue))
    child.start()
    row = queue.get()
    child.join()
    feed = {"input": zoo.sample_input(name, size=size)}
    before, after = measure_latency([str(path), str(out)], feed, threads=threads, repeats=40)
    row.update(model=name, exporter=exporter, ratio=ratio, size=size, latency_before_ms=before.median_ms,
               latency_after_ms=after.median_ms)
    speedup = before.median_ms / after.median_ms
    macs_ratio = row["macs_before"] / max(row["macs_after"], 1)
    row.update(speedup=speedup, macs_reduction=macs_ratio, speedup_per_macs=speedup / macs_ratio)
    return row


def markdown(rows: list[dict], ratio: float, threads: int, size: int) -> str:
    lines = [
        f"Pruning ratio {ratio} (L2 magnitude), random-init torchvision models at {size}x{size}, "
        f"onnxruntime CPU, {threads} threads, batch 1, median latency of alternating blocks. "
        "Share = conv/gemm output channels in prunable groups.",
        "",
        "| model | exporter | groups | share | prune s | peak RSS MB | params | MACs | "
        "latency ms | speedup | speedup / MACs ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['exporter']} | {r['groups']} | {r['share']:.0%} | "
            f"{r['prune_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M | "
            f"{r['macs_before'] / 1e6:.0f}M → {r['macs_after'] / 1e6:.0f}M | "
            f"{r['latency_before_ms']:.2f} → {r['latency_after_ms']:.2f} | "
            f"{r['speedup']:.2f}x | {r['speedup_per_macs']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--exporters", nargs="+", default=["torchscript"])
    parser.add_argument("--models", nargs="+", default=list(zoo.ZOO_MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="input image side")
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/onnxprune-bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        for exporter in args.exporters:
            row = bench(name, exporter, args.ratio, args.work, args.threads, args.size)
            print(f"{name:22} {exporter:11} share {row['share']:.0%} prune {row['prune_s']:.1f}s "
                  f"speedup {row['speedup']:.2f}x MACs /{row['macs_reduction']:.2f}", flush=True)
            rows.append(row)
    (args.out / "bench_zoo.json").write_text(json.dumps(rows, indent=1))
    (args.out / "bench_zoo.md").write_text(markdown(rows, args.ratio, args.threads, args.size))
    print(f"wrote {args.out / 'bench_zoo.json'} and {args.out / 'bench_zoo.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
