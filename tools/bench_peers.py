"""onnxprune beside Torch-Pruning on the torchvision CNN zoo, in one run on one machine.

For every CNN of the zoo (random-init, BatchNorm-calibrated weights, as the tests build them;
the torchscript export for onnxprune) and one pruning ratio, each in its own spawned process
(imports done before the clock starts; peak RSS is the process's high-water mark):

- onnxprune ``prune(path, ratio, verify=False)`` + ``save``, and the same with the oracle;
  each run writes a new file (the previous run's output is deleted before the clock: a save
  over an existing file pays ext4's flush of the new data on replace, which a first prune's
  output does not; measured +2 ms on mnasnet0_5, +6 ms on resnet18);
- Torch-Pruning 1.6.1 ``MagnitudePruner`` (L2, the same ratio, the classifier ignored) +
  ``step()`` on the torch model (its model build is not timed; its RSS includes torch).

Each tool runs ``--repeats`` times (3), the tools alternating; columns: weights MB, the
median wall time of each, the highest peak RSS of each, parameters after. Then (unless
``--no-accuracy``) task accuracy at the same MACs on the models with real weights, each
onnxprune allocation beside Torch-Pruning (``tools/_peer_accuracy.py``; written to
``tools/results/bench_peers_accuracy.{json,md}``). Writes
``tools/results/bench_peers.{json,md}``.

    python tools/bench_peers.py --ratio 0.5 [--models resnet50 vgg11_bn] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue as queue_module
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402 - the tools folder is on the path now

#: The CNNs of tools/results/bench_zoo.md.
MODELS = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large",
          "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "squeezenet1_1",
          "vgg11_bn", "mnasnet0_5", "shufflenet_v2_x1_0"]  # fmt: skip


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _onnxprune(name: str, ratio: float, verify: bool, out: str, queue) -> None:
    import onnxprune
    import onnxprune.api  # noqa: F401 - the package imports lazily: imports before the clock
    import zoo

    path = zoo.export(name, "torchscript")
    start = time.perf_counter()
    result = onnxprune.prune(path, ratio=ratio, verify=verify)
    result.save(out)
    wall = time.perf_counter() - start
    queue.put({"wall_s": wall, "peak_mb": _peak_mb(), "params": result.cost_after.params,
               "params_before": result.cost_before.params,
               "weights_mb": Path(path).stat().st_size / 2**20})  # fmt: skip


def magnitude_pruner(model, example, ratio: float):
    """Torch-Pruning's L2 ``MagnitudePruner`` of ``model`` at ``ratio``, the classifier (last
    Linear, else last Conv) ignored so it keeps its classes."""
    import torch
    import torch_pruning as tp

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return tp.pruner.MagnitudePruner(model, example,
                                     importance=tp.importance.MagnitudeImportance(p=2),
                                     pruning_ratio=ratio,
                                     ignored_layers=linears[-1:] or convs[-1:])  # fmt: skip


def _torch_pruning(name: str, ratio: float, queue) -> None:
    import torch
    import torch_pruning  # noqa: F401 - imported before the clock starts

    import zoo

    model = zoo.ZOO_MODELS[name]()
    example = torch.randn(1, 3, zoo.INPUT_SIZE[name], zoo.INPUT_SIZE[name])
    start = time.perf_counter()
    magnitude_pruner(model, example, ratio).step()
    wall = time.perf_counter() - start
    queue.put({"wall_s": wall, "peak_mb": _peak_mb(),
               "params": sum(p.numel() for p in model.parameters())})  # fmt: skip


def _child(target, *args) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    row = None
    while row is None and (process.is_alive() or not queue.empty()):
        try:
            row = queue.get(timeout=1)
        except queue_module.Empty:
            continue
    process.join()
    row = row if row is not None else {"error": f"exit {process.exitcode}"}
    if process.exitcode not in (0, None) and "error" not in row:
        row["error"] = f"exit {process.exitcode}"
    return row


def bench(name: str, ratio: float, work: Path, repeats: int = 1) -> dict:
    """Each tool ``repeats`` times, the tools alternating (so a slow spell of the machine
    falls on all of them): the median wall time and the highest peak RSS of each."""
    out = str(work / f"{name}.onnx")
    tools = {"onnxprune_no_verify": (_onnxprune, name, ratio, False, out),
             "onnxprune_verified": (_onnxprune, name, ratio, True, out),
             "torch_pruning": (_torch_pruning, name, ratio)}  # fmt: skip
    runs: dict[str, list[dict]] = {key: [] for key in tools}
    for _ in range(repeats):
        for key, (target, *args) in tools.items():
            Path(out).unlink(missing_ok=True)  # each prune writes a new file (module docstring)
            runs[key].append(_child(target, *args))
    row = {"model": name, "ratio": ratio, "repeats": repeats,
           **{key: _summary(tool_runs) for key, tool_runs in runs.items()}}  # fmt: skip
    print(name, {k: v for k, v in row.items() if isinstance(v, dict)}, flush=True)
    return row


def _summary(runs: list[dict]) -> dict:
    """The first failed run, else the first run with the median wall time and the highest
    peak RSS of all, and every wall time."""
    failed = next((r for r in runs if "error" in r), None)
    if failed is not None:
        return failed
    walls = [r["wall_s"] for r in runs]
    return {**runs[0], "wall_s": statistics.median(walls), "wall_s_runs": walls,
            "peak_mb": max(r["peak_mb"] for r in runs)}  # fmt: skip


def _cell(run: dict, key: str, fmt: str, scale: float = 1) -> str:
    return "failed" if "error" in run else format(run[key] * scale, fmt)


def markdown(rows: list[dict]) -> str:
    ratio = rows[0]["ratio"] if rows else 0
    repeats = rows[0].get("repeats", 1) if rows else 1
    lines = [
        f"Ratio {ratio}, L2 magnitude, no data; on this machine (2 cores), each tool in "
        f"its own process, {repeats} runs each, the tools alternating (wall: the median; "
        "peak RSS: the highest) with imports done before the clock starts. onnxprune: "
        "`prune(path, ratio, verify=...)` + `save` of the torchscript export; Torch-Pruning "
        "1.6.1: `MagnitudePruner` + `step()` on the torch model (classifier ignored). Peak RSS: "
        "the process's high-water mark (Torch-Pruning's includes torch itself). Each onnxprune "
        "run writes a new file (a save over an existing one pays ext4's flush on replace).", "",
        "| model | weights MB | onnxprune ms (no verify) | onnxprune ms (verified) | "
        "Torch-Pruning ms | peak RSS MB (no verify / verified / TP) | params after (onnxprune / "
        "TP) |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        a, b, t = row["onnxprune_no_verify"], row["onnxprune_verified"], row["torch_pruning"]
        weights = _cell(a, "weights_mb", ".0f")
        lines.append(
            f"| {row['model']} | {weights} | {_cell(a, 'wall_s', '.1f', 1000)} | "
            f"{_cell(b, 'wall_s', '.1f', 1000)} | {_cell(t, 'wall_s', '.1f', 1000)} | "
            f"{_cell(a, 'peak_mb', '.0f')} / {_cell(b, 'peak_mb', '.0f')} / "
            f"{_cell(t, 'peak_mb', '.0f')} | {_cell(a, 'params', ',')} / {_cell(t, 'params', ',')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per model")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="skip the task-accuracy comparison (tools/_peer_accuracy.py)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        rows = [bench(name, args.ratio, Path(work), args.repeats) for name in args.models]
    _results.write("bench_peers", rows, markdown(rows))
    if not args.no_accuracy:
        import _peer_accuracy

        accuracy = _peer_accuracy.accuracy_rows()
        _results.write("bench_peers_accuracy", accuracy, _peer_accuracy.markdown(accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
