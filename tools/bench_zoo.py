"""Benchmark pruning on the model zoos: JSON + markdown for the README.

For every model (and exporter): groups found, prunable share, prune wall time and peak RSS
(measured in a child process per model), params and MACs before/after, onnxruntime latency
before/after (2 threads, warm-up, median of alternating blocks) and speedup / MACs ratio.
``--suite cnn`` runs the torchvision CNNs at 224px (bench_zoo.*); ``--suite transformers``
the transformer zoo (bench_transformers.*), text models on one 128-token sequence.

    python tools/bench_zoo.py --ratio 0.5 --out tools/results
    python tools/bench_zoo.py --suite transformers --exporters torchscript dynamo
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


def _prune_one(path: str, ratio: float, out: str, queue, feeds=None, dims=None) -> None:
    import onnxprune

    start = time.perf_counter()
    analysis = onnxprune.analyze(path)
    result = onnxprune.prune(path, ratio=ratio, inputs=feeds, dims=dims)
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


SEQUENCE = 64  # the zoo configs have 64 positions


def _case(suite: str, name: str, exporter: str, size: int) -> tuple[Path, list, dict, dict]:
    """(model path, verification feeds, dims for MACs, latency feed) of one zoo model."""
    if suite == "cnn":
        import zoo

        path = zoo.export(name, exporter, size=size)
        feed = {"input": zoo.sample_input(name, size=size)}
        return path, [feed], {}, feed
    import transformer_zoo

    case = transformer_zoo.MODELS[name]
    batch = 1 if case.dynamic else case.batch
    feeds = [transformer_zoo.feeds(name, batch=batch, seed=s) for s in (0, 1)]
    import onnx

    text = "input_ids" in feeds[0]
    path = transformer_zoo.export(name, exporter)
    declared = {d.dim_param for i in onnx.load(path, load_external_data=False).graph.input
                for d in i.type.tensor_type.shape.dim if d.dim_param}  # fmt: skip
    dims = {k: v for k, v in {"batch": 1, "sequence": SEQUENCE}.items() if k in declared}
    feed = transformer_zoo.feeds(name, batch=batch, sequence=SEQUENCE if text else 8, seed=2)
    return path, feeds, dims, feed


def bench(suite: str, name: str, exporter: str, ratio: float, work: Path, threads: int,
          size: int) -> dict:  # fmt: skip
    from onnxprune.latency import measure_latency

    path, feeds, dims, feed = _case(suite, name, exporter, size)
    out = work / f"{name}-{exporter}.pruned.onnx"
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(
        target=_prune_one, args=(str(path), ratio, str(out), queue, feeds, dims or None))
    child.start()
    row = queue.get()
    child.join()
    before, after = measure_latency([str(path), str(out)], feed, threads=threads, repeats=40)
    row.update(model=name, exporter=exporter, ratio=ratio, size=size, latency_before_ms=before.median_ms,
               latency_after_ms=after.median_ms)
    speedup = before.median_ms / after.median_ms
    macs_ratio = row["macs_before"] / max(row["macs_after"], 1)
    row.update(speedup=speedup, macs_reduction=macs_ratio, speedup_per_macs=speedup / macs_ratio)
    return row


def markdown(rows: list[dict], ratio: float, threads: int, size: int, suite: str = "cnn") -> str:
    models = (f"random-init torchvision models at {size}x{size}" if suite == "cnn" else
              f"random-init transformer zoo (tests/transformer_zoo.py), text models on one "
              f"{SEQUENCE}-token sequence, heads and MLP pruned")  # fmt: skip
    lines = [
        f"Pruning ratio {ratio} (L2 magnitude), {models}, "
        f"onnxruntime CPU, {threads} threads, batch 1, median latency of alternating blocks. "
        "Share = produced channels in prunable groups.",
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
    import transformer_zoo
    import zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("cnn", "transformers"), default="cnn")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--exporters", nargs="+", default=["torchscript"])
    parser.add_argument("--models", nargs="+", help="default: every model of the suite")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="input image side")
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/onnxprune-bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    models = args.models or list(zoo.ZOO_MODELS if args.suite == "cnn" else transformer_zoo.MODELS)
    stem = "bench_zoo" if args.suite == "cnn" else "bench_transformers"
    rows = []
    for name in models:
        for exporter in args.exporters:
            row = bench(args.suite, name, exporter, args.ratio, args.work, args.threads, args.size)
            print(f"{name:22} {exporter:11} share {row['share']:.0%} prune {row['prune_s']:.1f}s "
                  f"speedup {row['speedup']:.2f}x MACs /{row['macs_reduction']:.2f}", flush=True)
            rows.append(row)
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"{stem}.md").write_text(
        markdown(rows, args.ratio, args.threads, args.size, args.suite))
    print(f"wrote {args.out / f'{stem}.json'} and {args.out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
