"""Peak memory of calibration statistics versus the number of calibration samples.

Each run happens in a fresh child process: analyse a zoo model, stream N random samples
(batches of 8) through onnxruntime with every consumer input as an extra output, reduce each
batch to per-channel sums at once. The child's own high-water RSS (VmHWM) should not grow
with N, because no activation outlives its batch.

    python tools/bench_calibration_memory.py --model resnet18 --samples 16 64 256
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
import _results  # noqa: E402 - the tools folder is on the path now


def _run(path: str, samples: int, queue) -> None:
    from bench_zoo import _peak_rss_mb

    import onnxprune
    from onnxprune.calibration import calibration_batches
    from onnxprune.importance import consumer_keys
    from onnxprune.statistics import collect_statistics

    analysis = onnxprune.analyze(path)
    model = analysis.analysis.model
    keys = consumer_keys([g for g in analysis.groups if g.prunable])
    start = time.perf_counter()
    stats = collect_statistics(
        model, keys, lambda: calibration_batches(model, random=samples, batch=8))
    queue.put({"samples": samples, "seconds": time.perf_counter() - start,
               "tensors": len(stats), "peak_rss_mb": _peak_rss_mb()})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--out", type=Path, default=ROOT / "tools" / "results")
    args = parser.parse_args(argv)
    path = zoo.export(args.model, "torchscript", size=224)
    rows = []
    for n in args.samples:
        queue = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(target=_run, args=(str(path), n, queue))
        child.start()
        rows.append(queue.get())
        child.join()
        print(f"{n:5d} samples: {rows[-1]['peak_rss_mb']:.0f} MB peak, "
              f"{rows[-1]['seconds']:.1f}s", flush=True)  # fmt: skip
    lines = [f"Calibration statistics for {args.model} (224x224, batches of 8, "
             f"{rows[0]['tensors']} consumer inputs streamed), peak RSS of a fresh process:", "",
             "| samples | seconds | peak RSS MB |", "|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['samples']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    _results.write("calibration_memory", rows, "\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
