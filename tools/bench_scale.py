"""Wall time and peak memory of onnxprune on large models, beside copying the same file.

For each model (built by ``tools/make_llm.py``; external data) one run measures, each command
in its own process (peak RSS from ``wait4``): ``cp`` of the model folder, onnx-ir load + save,
``onnxprune analyze``, ``prune --ratio 0.25`` with and without verification, ``prune
--target-macs 0.6``, ``prune`` with calibration (16 random sequences of 128 tokens) and
``onnxprune verify`` of the written model, and depth pruning (``--remove-blocks 8``, blocks
ranked by their output change on 4 random sequences of 64 tokens). Each command starts after
``sync`` (the page cache stays warm; the dirty pages of the command before are written back
first) and the model folder is read once before the first command, so ``cp`` too runs with
the page cache warm. The first five commands run ``--repeats`` times (3) in rounds, each
reported by its median wall time: a single ``cp`` of 4 GB took 1.3 to 7.6 s here from run to
run. Ratios are to the median ``cp`` and to the model's size on disk. Writes
``tools/results/bench_scale.{json,md}``.

Usage: ``python tools/bench_scale.py [shaped] [llama] [--repeats N]`` (default: the models
already built).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _results  # noqa: E402 - the tools folder is on the path now
import make_llm  # noqa: E402

PY = sys.executable


def run(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS GiB, exit code) of ``command`` in a child process, started
    after ``sync`` so that no command pays for writing back what the one before it wrote."""
    os.sync()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
    if process.returncode != 0:
        print(f"  exit {process.returncode}: {' '.join(command)}\n  {error[-400:]}",
              file=sys.stderr)  # fmt: skip
    return wall, usage.ru_maxrss / 2**20, process.returncode


def read_once(folder: Path) -> None:
    """Read every file of ``folder`` (untimed), so that every command, ``cp`` first, finds the
    model in the page cache: a cold first read (7-8 s for 4 GB here) would land on whichever
    command runs first."""
    chunk = bytearray(1 << 24)
    for file in folder.iterdir():
        if file.is_file():
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(chunk):
                    pass


def compile_package() -> None:
    """Compile onnxprune's modules to bytecode, as installing a package does: an editable
    install under ``PYTHONDONTWRITEBYTECODE`` (this workplace sets it) would otherwise compile
    every module in every command (0.1 s each)."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([PY, "-m", "compileall", "-q", str(root / "onnxprune"), str(root / "passes")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file())


def bench(kind: str, work: Path, repeats: int = 3) -> dict:
    model = make_llm.make(kind)
    size = folder_size(model) / 2**30
    out = work / "out"
    runs: dict[str, list[tuple[float, float, int]]] = {}

    def measure(name: str, command: list[str], *, fresh: bool = True) -> None:
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
        wall, rss, code = run(command)
        runs.setdefault(name, []).append((wall, rss, code))
        print(f"  {name}: {wall:.1f} s, {rss:.2f} GiB, exit {code}", flush=True)

    onnxprune = [PY, "-m", "onnxprune"]
    prune = [*onnxprune, "prune", str(model), "-o", str(out / "p.onnx")]
    compile_package()
    read_once(model.parent)
    for _ in range(repeats):  # rounds, so that a slow spell of the machine falls on all
        measure("cp (model folder)", ["cp", "-r", str(model.parent), str(out / "copy")])
        measure("onnx-ir load + save", [PY, "-c", (
            "import onnx_ir as ir, sys; m = ir.load(sys.argv[1]); "
            "ir.save(m, sys.argv[2], external_data='m.onnx.data')"), str(model),
            str(out / "m.onnx")])  # fmt: skip
        measure("analyze", [*onnxprune, "analyze", str(model)])
        measure("prune --ratio 0.25 --no-verify", [*prune, "--ratio", "0.25", "--no-verify"])
        measure("prune --ratio 0.25 (verified)", [*prune, "--ratio", "0.25"])
    measure("verify (written model)", [*onnxprune, "verify", str(model), str(out / "p.onnx")],
            fresh=False)  # fmt: skip
    measure("prune --target-macs 0.6 (verified)", [*prune, "--target-macs", "0.6"])
    measure("prune --ratio 0.25, calibration 16 x 128 tokens (verified)",
            [*prune, "--ratio", "0.25", "--random", "16", "--dim", "input_ids=1,128"])
    measure("prune --remove-blocks 8, ranked on 4 x 64 tokens (verified)",
            [*prune, "--remove-blocks", "8", "--random", "4", "--dim", "input_ids=1,64"])
    rows = []
    for name, measured in runs.items():
        walls = sorted(w for w, _, _ in measured)
        rows.append({"command": name, "wall_s": round(float(np.median(walls)), 2),
                     "walls_s": [round(w, 2) for w, _, _ in measured],
                     "peak_rss_gib": round(max(r for _, r, _ in measured), 2),
                     "exit": max((c for _, _, c in measured), key=abs)})  # fmt: skip
    cp = rows[0]["wall_s"]
    for row in rows:
        row["x_cp_time"] = round(row["wall_s"] / max(cp, 1e-9), 2)
        row["x_model_size"] = round(row["peak_rss_gib"] / size, 2)
    return {"model": kind, "path": str(model), "size_gib": round(size, 2), "repeats": repeats,
            "shape": make_llm.SHAPES[kind], "rows": rows}  # fmt: skip


def markdown(results: list[dict]) -> str:
    repeats = max((r.get("repeats", 1) for r in results), default=1)
    lines = ["Each command in its own process on this machine (2 cores, 24 GB), started after "
             "`sync` with the model in the page cache (read once before the first); the first "
             f"five commands {repeats} times in rounds (wall: the median, every run listed; peak "
             "RSS: the highest), the others once; peak RSS from wait4 (file-backed pages of "
             "memory-mapped weights included). Ratios: to the median `cp` of the same model "
             "folder in the same run, and to the model's size on disk.", ""]  # fmt: skip
    for result in results:
        shape = ", ".join(f"{k} {v}" for k, v in result["shape"].items())
        lines += [f"**{result['model']}** ({shape}; {result['size_gib']} GiB)", "",
                  "| command | wall s | runs s | x cp | peak RSS GiB | x model size | exit |",
                  "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['command']} | {r['wall_s']} | "
                  f"{' / '.join(str(w) for w in r.get('walls_s', [r['wall_s']]))} | "
                  f"{r['x_cp_time']} | {r['peak_rss_gib']} | {r['x_model_size']} | {r['exit']} |"
                  for r in result["rows"]]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {', '.join(sorted(make_llm.SHAPES))} (default: the ones "
                        "already built)")  # no choices=: argparse checks an empty list against them
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of cp, load + save, analyze and the two ratio prunes, in "
                        "rounds (default 3)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the outputs (default: a temporary folder)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(make_llm.SHAPES))
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; choose from "
                     f"{', '.join(sorted(make_llm.SHAPES))}")
    kinds = args.models or [k for k in make_llm.SHAPES
                            if (make_llm._folder(k, make_llm.SHAPES[k]) / "model.onnx").exists()]
    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for kind in kinds:
            print(kind, flush=True)
            results.append(bench(kind, Path(work), args.repeats))
    _results.write("bench_scale", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
