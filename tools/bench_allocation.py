"""Allocation strategies side by side, and beside Torch-Pruning at the same MACs: speed per
MAC removed on the torchvision CNN zoo.

For every CNN of the zoo (the torchscript export the tests cache, at its own input size or at
``--size``) and one MACs target, each strategy (``uniform``; ``uniform aligned``, the same with
``--round-to auto``; ``global``; ``latency``; ``one-sided``) prunes to the target by L2
magnitude (no data), and the latency allocation once more to that share of the latency
(``latency -> latency``).
With ``--torch-pruning``, Torch-Pruning 1.6.1 (``MagnitudePruner``, L2, local, the classifier
ignored) prunes the same torch model (the zoo's weights), its ratio bisected on its own MACs
count to the target, and is exported as the zoo exports (torchscript, opset 17); its MACs are
then counted on that export as onnxprune counts its own. The original and every pruned model
are timed together in onnxruntime (2 threads, alternating blocks, all graph optimisations).
Columns: MACs kept, speedup, speedup / MACs ratio = speedup x MACs kept (1.0: time falls as
fast as MACs). The ``floor`` column is the same model pruned deep (``--ratio 0.9 --round-to
auto``, timed in the same blocks): the share of the time it still takes at its share of the
MACs; extrapolated linearly to no MACs (F, the time no width removes), time linear in MACs
above F would give at the target the ratio target / (F + (1 - F) x target), the cell's
estimate. It is what uniform width pruning can hope for (memory-bound costs, falling with the
width rather than its square, keep its curve above that line), not a bound on every
allocation: one that cuts memory traffic with the MACs (one-sided) can pass it.
Writes ``tools/results/bench_allocation[_<size>].{json,md}``.

    python tools/bench_allocation.py [--target 0.5] [--models resnet18 mobilenet_v2]
    python tools/bench_allocation.py --size 224 --torch-pruning   # deployment size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now
from bench_peers import MODELS, magnitude_pruner  # noqa: E402 - the same CNNs and pruner

#: (column, allocation, round_to, what the target is a share of): "uniform aligned" is the
#: uniform ratio with every class's kept count in multiples of onnxruntime's NCHWc block
#: (``round_to="auto"``); "latency -> latency" is the latency allocation aimed at the same
#: share of the latency instead of the MACs (``target_latency``, measured while searching).
STRATEGIES = (("uniform", "uniform", None, "macs"), ("uniform aligned", "uniform", "auto", "macs"),
              ("global", "global", None, "macs"), ("latency", "latency", None, "macs"),
              ("latency -> latency", "latency", None, "latency"),
              ("one-sided", "one-sided", None, "macs"))


#: The ratio of the deep-pruned model the ``floor`` column times.
FLOOR_RATIO = 0.9

#: Columns whose cells also show the MACs kept (their target is not the MACs, or not ours).
SHOW_MACS = {"Torch-Pruning"} | {c for c, _, _, kind in STRATEGIES if kind != "macs"}


def torch_pruning(name: str, target: float, size: int, out: Path, reference: Path) -> dict:
    """Torch-Pruning's magnitude pruning of the zoo's torch model with its ratio bisected to
    ``target`` of its own MACs count, exported to ``out``; MACs kept against ``reference``
    (the zoo's export of the same model at ``size``)."""
    import copy

    import onnx_ir as ir
    import torch
    import torch_pruning as tp

    import zoo
    from onnxprune.allocation import search_ratio
    from onnxprune.metrics import model_cost

    original = zoo.ZOO_MODELS[name]().eval()
    example = torch.from_numpy(zoo.sample_input(name, size=size))
    before, _ = tp.utils.count_ops_and_params(original, example)

    def pruned_at(ratio: float):
        model = copy.deepcopy(original)
        magnitude_pruner(model, example, ratio).step()
        return model, tp.utils.count_ops_and_params(model, example)[0] / before

    start = time.perf_counter()
    high = search_ratio(lambda ratio: pruned_at(ratio)[1], target, steps=10)
    model, kept = pruned_at(high)
    wall = time.perf_counter() - start
    with zoo.quiet():
        torch.onnx.export(model.eval(), (example,), str(out), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])  # fmt: skip
    macs = model_cost(ir.load(str(out))).macs / model_cost(ir.load(str(reference))).macs
    return {"allocation": "Torch-Pruning", "ratio": high, "prune_s": wall, "macs_kept": macs,
            "verified": None}  # fmt: skip


def bench(name: str, target: float, size: int | None = None, peers: bool = False,
          work: Path | None = None) -> dict:  # fmt: skip
    import onnxprune
    import zoo
    from onnxprune.latency import measure_latency

    size = None if size == zoo.INPUT_SIZE[name] else size
    path = zoo.export(name, "torchscript", size=size)
    feed = {"input": zoo.sample_input(name, size=size)}
    rows, models = [], [str(path)]
    for column, strategy, round_to, kind in STRATEGIES:
        start = time.perf_counter()
        result = onnxprune.prune(path, **{f"target_{kind}": target}, allocation=strategy,
                                 inputs=[feed], round_to=round_to)  # fmt: skip
        wall = time.perf_counter() - start
        models.append(result.to_proto())
        rows.append({"allocation": column, "prune_s": wall,
                     "macs_kept": result.cost_after.macs / result.cost_before.macs,
                     "verified": result.verification.passed})  # fmt: skip
    deep = onnxprune.prune(path, ratio=FLOOR_RATIO, inputs=[feed], round_to="auto")
    models.append(deep.to_proto())
    rows.append({"allocation": "floor", "macs_kept": deep.cost_after.macs / deep.cost_before.macs,
                 "verified": deep.verification.passed})  # fmt: skip
    if peers:
        out = work / f"{name}-torch-pruning.onnx"
        try:
            rows.append(torch_pruning(name, target, size or zoo.INPUT_SIZE[name], out, path))
            models.append(str(out))
        except Exception as error:  # noqa: BLE001 - a peer's failure is a result
            rows.append({"allocation": "Torch-Pruning", "error": type(error).__name__})
    stats = measure_latency(models, feed, repeats=20, blocks=5)
    for row, st in zip([r for r in rows if "error" not in r], stats[1:], strict=True):
        row["latency_ms"] = st.median_ms
        row["speedup"] = stats[0].median_ms / st.median_ms
        row["speedup_per_macs"] = row["speedup"] * row["macs_kept"]
        if row["allocation"] == "floor":
            time_kept, macs_kept = 1 / row["speedup"], row["macs_kept"]
            fixed = max(0.0, (time_kept - macs_kept) / (1 - macs_kept))
            row.update(time_kept=time_kept, fixed_share=fixed,
                       bound=target / (fixed + (1 - fixed) * target))
        print(f"{name:20} {row['allocation']:15} MACs {row['macs_kept']:.1%} speedup "
              f"{row['speedup']:.2f}x ratio {row['speedup_per_macs']:.2f}", flush=True)
    return {"model": name, "input": list(feed["input"].shape), "target_macs": target,
            "latency_ms_before": stats[0].median_ms, "rows": rows}  # fmt: skip


def markdown(report: dict) -> str:
    columns = [r["allocation"] for r in report["models"][0]["rows"]]
    peers = "Torch-Pruning" in columns
    lines = [f"Target {report['target']:.0%} of MACs, L2 magnitude, no data; one run on this "
             "machine (2 onnxruntime threads), `python tools/bench_allocation.py"
             + (f" --size {report['size']}" if report.get("size") else "")
             + (" --torch-pruning" if peers else "") + "`. Cells: speedup (speedup / MACs "
             "ratio); the MACs kept too where the target was not the MACs"
             + (" and for Torch-Pruning's export" if peers else "") + "; floor: the share of "
             f"the time the model pruned at --ratio {FLOOR_RATIO} --round-to auto takes, and "
             "the ratio a time linear in MACs above its floor would give at the target "
             "(tools/bench_allocation.py's docstring).", "",
             "| model | input | ms before | " + " | ".join(columns) + " |",
             "|---|---|---:|" + "---:|" * len(columns)]  # fmt: skip
    for m in report["models"]:
        cells = [f"failed ({r['error']})" if "error" in r else
                 f"{r['time_kept']:.0%} of the time at {r['macs_kept']:.0%} of MACs: "
                 f"~{r['bound']:.2f}" if r["allocation"] == "floor" else
                 f"{r['speedup']:.2f}x ({r['speedup_per_macs']:.2f})"
                 + (f", {r['macs_kept']:.0%} MACs" if r["allocation"] in SHOW_MACS else "")
                 for r in m["rows"]]  # fmt: skip
        lines.append(f"| {m['model']} | {'x'.join(map(str, m['input']))} | "
                     f"{m['latency_ms_before']:.2f} | " + " | ".join(cells) + " |")  # fmt: skip
    medians = [statistics.median(m["rows"][k]["bound" if column == "floor" else
                                              "speedup_per_macs"] for m in report["models"]
                                 if "error" not in m["rows"][k])
               for k, column in enumerate(columns)]  # fmt: skip
    lines.append("| median | | | " + " | ".join(
        f"(~{v:.2f})" if column == "floor" else f"({v:.2f})"
        for v, column in zip(medians, columns, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--size", type=int, default=None,
                        help="image side (default: the zoo's, 64 or 224)")
    parser.add_argument("--torch-pruning", action="store_true",
                        help="add Torch-Pruning at the same MACs (needs the test extra)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        models = [bench(m, args.target, args.size, args.torch_pruning, Path(work))
                  for m in args.models]  # fmt: skip
    report = {"target": args.target, "size": args.size, "models": models}
    stem = "bench_allocation" + (f"_{args.size}" if args.size else "")
    _results.write(stem, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
