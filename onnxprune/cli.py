"""The command line: ``onnxprune analyze | prune | verify | bench``.

Exit codes: 0 success, 1 verification failed, 2 bad usage or input. Errors are one line on
stderr naming the problem; progress bars go to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onnxprune.errors import OnnxPruneError, UsageError, VerificationError
from onnxprune.model_io import check_destination, check_not_input, files_of, load_model

PLAN_KEY = "onnxprune.plan"

EXAMPLES = """examples:
  onnxprune analyze model.onnx
  onnxprune prune model.onnx -o model.pruned.onnx --ratio 0.5 --report report/
  onnxprune prune model.onnx -o small.onnx --target-macs 0.5 --round-to 8 --exclude 'head*'
  onnxprune verify model.onnx model.pruned.onnx
  onnxprune bench model.onnx model.pruned.onnx
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 itself; keep its message format
        self.print_usage(sys.stderr)
        self.exit(2, f"onnxprune: error: {message}\n")


def _dims(items: list[str]) -> dict[str, int | tuple[int, ...]]:
    """``NAME=INT`` binds a symbolic dim; ``INPUT=INT,INT,...`` an input's whole shape."""
    dims: dict[str, int | tuple[int, ...]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        sizes = value.split(",")
        if not sep or not all(s.isascii() and s.isdigit() for s in sizes):
            raise UsageError(f"--dim expects NAME=INT (a symbolic dim) or INPUT=INT,INT,... "
                             f"(an input's whole shape), got '{item}'")  # fmt: skip
        dims[name] = int(value) if len(sizes) == 1 else tuple(int(s) for s in sizes)
    return dims


@contextmanager
def _progress(console: Console) -> Iterator:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            total = total or None  # 0: unknown length (streamed calibration batches)
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _analyze(args, out: Console, err: Console) -> int:
    from onnxprune.api import analyze
    from onnxprune.report import analysis_report

    with _progress(err) as progress:
        ma = analyze(args.model, progress=progress)
    report = analysis_report(ma)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    table = Table(title=f"groups of {args.model}")
    for col in ("id", "status", "units", "x size", "width", "members", "produced by", "reason"):
        table.add_column(col, justify="right" if col in ("id", "units", "x size", "width",
                                                         "members") else "left")
    shown = [g for g, row in zip(ma.groups, report["groups"], strict=True)
             if args.all or not g.interface_only()]
    for group in shown:
        row = report["groups"][group.id]
        reason = (row["blocked"] or row["approximate"] or [""])[0]
        style = {"exact": "green", "approximate": "yellow", "blocked": "red"}[row["status"]]
        units = f"{row['channels']} {row['kind']}" if row["kind"] != "channels" else str(
            row["channels"])
        table.add_row(str(row["id"]), f"[{style}]{row['status']}[/]", units,
                      str(row["unit"]), str(row["width"]), str(row["members"]),
                      ", ".join(row["producers"][:2]), reason)
    out.print(table)
    c = report["counts"]
    out.print(f"{len(ma.groups)} groups: {c['exact']} exact, {c['approximate']} approximate "
              f"(pruned only with --allow-approximate), {c['blocked']} blocked "
              f"({report['interface_only_blocked']} only because they reach the model's inputs "
              f"or outputs{'' if args.all else '; shown with --all'}).")
    cost = report["prunable_cost_share"]
    out.print(f"prunable share: {report['prunable_share']:.1%} of produced channels, "
              f"{cost['params']:.1%} of parameters, {cost['macs']:.1%} of MACs")
    if report["unknown_ops"]:
        out.print("ops without a channel rule (their channels are blocked): "
                  + ", ".join(f"{k} x{v}" for k, v in report["unknown_ops"].items()))
    _print_blocks(out, report, args.all)
    return 0


def _print_blocks(out: Console, report: dict, everything: bool) -> None:
    """The removable residual branches (depth pruning), as ``analyze`` lists them."""
    blocks, rejected = report["blocks"], report["not_removable_blocks"]
    if blocks:
        table = Table(title="removable blocks (depth pruning: --remove-blocks, --depth-only, "
                      "--with-depth)")  # fmt: skip
        for col in ("block", "layer", "sum node", "input", "nodes", "params", "MACs"):
            table.add_column(col, justify="left" if col in ("sum node", "input") else "right")
        for b in blocks:
            table.add_row(str(b["id"]), str(b["layer"]), b["add"], b["input"], str(b["nodes"]),
                          f"{b['params']:,}", f"{b['macs_share']:.1%}")  # fmt: skip
        out.print(table)
    out.print(f"{len(blocks)} removable blocks (residual branches) in {report['layers']} "
              f"layers; {len(rejected)} weighted sums not removable"
              + ("" if everything or not rejected else " (reasons with --all)"))
    for r in rejected if everything else []:
        out.print(f"  {r['add']}: {r['reason']}")


def _prune(args, out: Console, err: Console) -> int:
    from onnxprune.api import prune
    from onnxprune.report import build_report, write_report
    from onnxprune.sessions import TMP_ENV, set_tmp_dir

    if Path(args.output).resolve() == Path(args.model).resolve():
        raise UsageError(f"output path '{args.output}' is the input model; choose another -o")
    if args.ratio is not None and not 0 <= args.ratio < 1:
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio}")
    protected = files_of(args.model)
    for path in [Path(args.output), *([args.plan_out] if args.plan_out else [])]:
        check_destination(path)
        check_not_input(path, protected)
    if args.tmp_dir is None and not os.environ.get(TMP_ENV):
        set_tmp_dir(Path(args.output).parent)  # a staged large model is then moved, not copied
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise UsageError(f"--report '{args.report}' exists and is not a folder; the report is "
                         "a folder of files")  # fmt: skip
    with _progress(err) as progress:
        result = prune(
            args.model, ratio=args.ratio, target_macs=args.target_macs,
            target_params=args.target_params, target_latency=args.target_latency,
            plan=args.plan, compensate=args.compensate or None, refit=args.refit,
            sequential_refit=args.sequential_refit,
            criterion=args.criterion, calibration=args.calib, calibration_random=args.random,
            calibration_mask=args.calib_mask,
            providers=args.providers, round_to=args.round_to, min_channels=args.min_channels,
            exclude=args.exclude, allow_approximate=args.allow_approximate,
            head_dim=args.head_dim, verify=not args.no_verify, dims=_dims(args.dim),
            approximate_min_cosine=args.approximate_min_cosine, allocation=args.allocation,
            remove_blocks=args.remove_blocks, depth=args.depth,
            block_criterion=args.block_criterion, iterative_blocks=args.iterative_blocks,
            progress=progress,
        )  # fmt: skip
    with result:  # removes the staged copy of a large model once written
        if not result.plan and args.ratio != 0:
            warnings = "; ".join(result.options["warnings"]) or "no prunable group"
            raise UsageError(f"nothing would change: no channel is removed ({warnings}); nothing "
                             "was written")  # fmt: skip
        plan = result.plan.to_dict() | {"options": result.options}
        result.model.metadata_props[PLAN_KEY] = json.dumps(plan)
        saved = result.save(args.output)
        b, a = result.cost_before, result.cost_after
        out.print(f"parameters {b.params:,} -> {a.params:,} ({a.params / max(b.params, 1):.1%}); "
                  f"MACs {b.macs:,} -> {a.macs:,} ({a.macs / max(b.macs, 1):.1%})")
        for cost, when in ((b, "original"), (a, "pruned")):
            if cost.unknown:
                out.print(f"[yellow]MACs of {len(cost.unknown)} node(s) of the {when} model are "
                          f"unknown (shapes not inferred) and not counted: "
                          f"{', '.join(cost.unknown[:5])}{' ...' if len(cost.unknown) > 5 else ''}[/]")
        shapes = result.options["cost_input_shapes"]
        out.print("counted at " + _shapes_text(shapes)
                  + (f" (sizes for {', '.join(result.options['probed_dims'])} "
                     + ("chosen where the model runs" if result.options["probed_by_running"]
                        else "not run: a large model with --no-verify")
                     + "; set them with --dim)" if result.options["probed_dims"] else ""))
        out.print(f"pruned {len(result.plan.removed)} of {sum(g.prunable for g in result.groups)} "
                  "prunable groups "
                  + (f"from plan {args.plan}" if args.plan else f"at ratio {result.ratio:.3f}"))
        if result.blocks or result.plan.blocks:
            dropped = sorted(result.plan.blocks)
            out.print(f"dropped {len(dropped)} of {len(result.blocks)} removable blocks"
                      + (f" ({', '.join(map(str, dropped[:12]))}"
                         f"{' ...' if len(dropped) > 12 else ''})" if dropped else "")
                      + (f", ranked by {result.options['block_criterion']}"
                         if result.options.get("block_criterion") else ""))
        if result.options.get("depth_search"):
            chosen = len(result.plan.blocks)
            out.print("depth + width candidates (output change on the calibration data): "
                      + ", ".join(f"{r['blocks']} blocks + ratio {r['ratio']:.3f}: "
                                  f"{r['output_change']:.3g}"
                                  + (" (chosen)" if r["blocks"] == chosen else "")
                                  for r in result.options["depth_search"]))  # fmt: skip
        source = result.options.get("calibration") or (
            f"{args.random} random samples" if args.random else None)
        if source:
            refit = (" + sequential least-squares refit" if result.options["sequential_refit"]
                     else " + least-squares refit" if result.options["refit"] else "")
            comp = " + bias compensation" if result.options["compensate"] else ""
            out.print(f"importance: {result.options['criterion']}{comp}{refit} (calibration: "
                      f"{source})")
        else:
            name = result.options["criterion"]
            name += " weight magnitude" if name in ("l1", "l2") else ""
            out.print(f"importance: {name} (no calibration data; --calib or --random enable the "
                      "data-driven criteria)")
        for warning in result.options["warnings"]:
            out.print(f"[yellow]warning: {warning}[/]")
        v = result.verification
        if v is None:
            out.print("[yellow]verification skipped (--no-verify): the result is unverified[/]")
        else:
            _print_verdict(out, "oracle: pruned == masked original", v)
            if result.similarity is not None:
                out.print(f"approximate groups: cosine {result.similarity.min_cosine:.4f} to the "
                          f"masked original (threshold {result.options['approximate_min_cosine']}): "
                          "[green]passed[/]")
        out.print(f"wrote {saved}")
        if args.report:
            for path in write_report(build_report(result), args.report):
                out.print(f"wrote {path}")
        if args.plan_out:
            Path(args.plan_out).write_text(json.dumps(plan, indent=1))
            out.print(f"wrote {args.plan_out}")
    return 0


def _shapes_text(shapes) -> str:
    from onnxprune.input_sizes import shapes_text

    return shapes_text(shapes) or "no inputs"


def _print_verdict(out: Console, what: str, v) -> None:
    status = "[green]passed[/]" if v.passed else "[red]FAILED[/]"
    out.print(f"verification: {status} ({what}); max |diff| {v.max_abs_diff:.2e}, worst relative L2 "
              f"{v.max_rel_diff:.2e}, min cosine {v.min_cosine:.6f}, over {v.samples} input(s) "
              f"at {'; '.join(_shapes_text(s) for s in v.input_shapes)}")
    for name, check in v.checks.items():
        out.print(f"  {name}: max |diff| {check.max_abs_diff:.3e}, rel. L2 {check.rel_l2:.2e}, "
                  f"{'passed' if check.passed else 'FAILED'} ({check.rule})")
    if v.note:
        out.print(v.note)


def _refit_weights(original, pruned, plan, names: list[str]) -> dict:
    """Refit weights in the original's shape: the pruned model's values at kept positions
    (removed positions are masked anyway), so the oracle checks the rewrite around them."""
    from onnxprune.channel_graph import Dim

    updates = {}
    for name in names:
        full = original.graph.initializers[name].const_value.numpy().copy()
        small = pruned.graph.initializers[name].const_value.numpy()
        index = tuple(plan.kept.get(Dim(name, axis), slice(None)) for axis in range(full.ndim))
        full[_open_mesh(index, full.shape)] = small
        updates[name] = full
    return updates


def _open_mesh(index: tuple, shape: tuple[int, ...]):
    import numpy as np

    return np.ix_(*[np.arange(n)[i] for i, n in zip(index, shape, strict=True)])


def _verify(args, out: Console, err: Console) -> int:
    import numpy as np

    from onnxprune.api import analyze
    from onnxprune.input_sizes import decide_sizes, random_inputs
    from onnxprune.plan import RemovalPlan, dropped_blocks
    from onnxprune.sessions import runs_on
    from onnxprune.verify import against_masked, compare, masked_model, similarity

    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {args.samples}")
    pruned = load_model(args.pruned)
    raw = pruned.metadata_props.get(PLAN_KEY)
    original = load_model(args.original)
    sizes = decide_sizes(original, _dims(args.dim), None, runs_on(original))
    feeds = sizes.random_feeds(original, min(args.samples, 2)) + [
        random_inputs(original, sizes.second or sizes.shapes, seed=k)
        for k in range(2, args.samples)]  # fmt: skip
    if raw is None:
        verdict = compare(args.original, args.pruned, feeds)
        _print_verdict(out, "plain comparison with the original (no onnxprune plan in the "
                       "model)", verdict)  # fmt: skip
        return 0 if verdict.passed else 1
    try:
        stored = json.loads(raw)
        options = stored.get("options", {})
        removed = {int(k): np.array(v, dtype=np.int64) for k, v in stored["removed"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(f"the plan stored in '{args.pruned}' is not readable ({exc}); was it "
                         "written by onnxprune?") from exc  # fmt: skip
    with _progress(err) as progress:
        ma = analyze(args.original, head_dim=bool(options.get("head_dim", False)),
                     progress=progress)  # fmt: skip
    by_id = {g.id: g for g in ma.groups}
    if any(k not in by_id or by_id[k].blocked or (v.size and v.max() >= by_id[k].n_atoms)
           for k, v in removed.items()):  # fmt: skip
        raise UsageError(f"the plan stored in '{args.pruned}' does not fit '{args.original}' "
                         "(other groups or widths): is it the model it was pruned from?")
    try:
        dropped = dropped_blocks(stored, ma.blocks.blocks if stored.get("blocks") else ())
    except (UsageError, ValueError, AttributeError) as exc:
        raise UsageError(f"the plan stored in '{args.pruned}' does not fit '{args.original}' "
                         f"({exc}): is it the model it was pruned from?") from exc
    rebuilt = RemovalPlan.build(ma.groups, removed, dropped)
    rebuilt.fills = RemovalPlan.read_fills(stored)
    try:
        rebuilt.weight_updates = _refit_weights(ma.analysis.model, pruned, rebuilt,
                                                stored.get("refit_weights", []))  # fmt: skip
    except (KeyError, ValueError, IndexError) as exc:
        raise UsageError(f"the refit weights of '{args.pruned}' do not fit '{args.original}' "
                         f"({exc}): is it the model it was pruned from?") from exc
    reference = masked_model(ma.analysis.model, rebuilt)
    approximate = {g.id for g in ma.groups if g.approximate} & set(rebuilt.removed)
    if approximate:
        threshold = float(options.get("approximate_min_cosine", 0.9))
        verdict = similarity(reference, pruned, feeds, threshold)
        _print_verdict(out, f"approximate groups {sorted(approximate)} pruned: cosine to the "
                       "masked original", verdict)  # fmt: skip
    else:
        verdict = against_masked(reference, pruned, feeds, rebuilt.kept)
        _print_verdict(out, "oracle: pruned == original with the removed channels masked at "
                       "their consumers", verdict)  # fmt: skip
    return 0 if verdict.passed else 1


def _bench(args, out: Console, err: Console) -> int:
    import onnx

    from onnxprune.input_sizes import decide_sizes, declared_inputs, random_inputs
    from onnxprune.latency import measure_latency
    from onnxprune.metrics import model_cost
    from onnxprune.sessions import runs_on

    models = [load_model(p) for p in (args.a, args.b)]
    inputs = [{k: (v.dtype, len(v.shape or ())) for k, v in declared_inputs(m).items()}
              for m in models]  # fmt: skip
    if inputs[0] != inputs[1]:
        raise UsageError(f"'{args.a}' and '{args.b}' take different inputs ({inputs[0]} vs "
                         f"{inputs[1]}); bench compares two versions of one model")  # fmt: skip
    sizes = decide_sizes(models[0], _dims(args.dim), None, runs_on(models[0]))
    costs = [model_cost(onnx.load(str(p), load_external_data=False), sizes.dims)
             for p in (args.a, args.b)]  # fmt: skip
    out.print(f"at {sizes.describe()}")
    feed = random_inputs(models[0], sizes.shapes)
    err.print("measuring latency (alternating blocks)...")
    stats = measure_latency([str(args.a), str(args.b)], feed, threads=args.threads,
                            repeats=args.repeats)
    table = Table(title="onnxprune bench")
    table.add_column("")
    for path in (args.a, args.b):
        table.add_column(Path(path).name, justify="right")
    table.add_column("B / A", justify="right")
    table.add_row("parameters", *(f"{c.params:,}" for c in costs),
                  f"{costs[1].params / max(costs[0].params, 1):.1%}")
    table.add_row("MACs", *(f"{c.macs:,}" for c in costs),
                  f"{costs[1].macs / max(costs[0].macs, 1):.1%}")
    for op in sorted(set(costs[0].macs_by_op) | set(costs[1].macs_by_op)):
        a, b = (c.macs_by_op.get(op, 0) for c in costs)
        table.add_row(f"  MACs {op}", f"{a:,}", f"{b:,}", f"{b / a:.1%}" if a else "")
    table.add_row(f"latency median ({args.threads} threads)", *(f"{s.median_ms:.3f} ms" for s in stats),
                  f"{stats[1].median_ms / stats[0].median_ms:.1%}")
    table.add_row("latency p10-p90", *(f"{s.p10_ms:.3f}-{s.p90_ms:.3f}" for s in stats), "")
    out.print(table)
    speedup = stats[0].median_ms / stats[1].median_ms
    if costs[0].macs and costs[1].macs:
        macs_ratio = costs[0].macs / costs[1].macs
        out.print(f"speedup {speedup:.2f}x for {macs_ratio:.2f}x fewer MACs "
                  f"(speedup / MACs ratio = {speedup / macs_ratio:.2f})")
    else:
        out.print(f"speedup {speedup:.2f}x (MACs unknown: no contraction with known shapes)")
    for cost, path in zip(costs, (args.a, args.b), strict=True):
        if cost.unknown:
            out.print(f"[yellow]{path}: MACs of {len(cost.unknown)} node(s) unknown "
                      f"({', '.join(cost.unknown[:5])}{' ...' if len(cost.unknown) > 5 else ''})[/]")
    return 0


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}"
                                         ) from None  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from onnxprune.importance import CRITERIA

    parser = _Parser(
        prog="onnxprune",
        description="Structured pruning of ONNX models from any framework: remove channels, "
        "neurons and heads, verified against the original.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tmp-dir", metavar="DIR", help="folder for temporary model copies "
                        "of models over 2 GB (default: $ONNXPRUNE_TMPDIR, else the output's "
                        "folder for prune, else the system temp folder); removed when done")
    common.add_argument("--debug", action="store_true", help="show the traceback of an "
                        "internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("analyze", parents=[common], help="list the model's groups and what blocks the others",
                       description="Find every group of channels that can be removed together.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    p.add_argument("--all", action="store_true", help="also list groups blocked only by the "
                   "model's inputs/outputs")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("prune", parents=[common], help="prune a model and write the smaller one",
                       description="Prune, verify (pruned == masked original) and write atomically.")
    p.add_argument("model", help="the .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="remove this fraction of each group's "
                        "channels, in [0, 1)")
    target.add_argument("--target-macs", type=float, help="keep this fraction of the MACs "
                        "(0.5 halves them)")
    target.add_argument("--target-params", type=float, help="keep this fraction of the "
                        "parameters")
    target.add_argument("--target-latency", type=float, help="keep this fraction of the "
                        "onnxruntime latency (measured while searching; bind dims with --dim)")
    target.add_argument("--plan", type=Path, help="re-apply a plan written by --plan-out "
                        "(same model, same options)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), help="importance criterion "
                   "(default: fluctuation with calibration data, else l2 weight magnitude; "
                   "obs, the error left after the refit, ranks per MAC under --allocation "
                   "global)")
    depth = p.add_argument_group("depth pruning (whole residual branches: attention/MLP "
                                 "sublayers, residual blocks)")  # fmt: skip
    depth.add_argument("--remove-blocks", type=int, metavar="N", help="drop the N least "
                       "important branches (alone, or before width pruning to --ratio/target)")
    modes = depth.add_mutually_exclusive_group()
    modes.add_argument("--depth-only", action="store_const", const="depth", dest="depth",
                       help="only drop branches: --ratio is the fraction of branches, a target "
                       "drops the fewest that reach it")
    modes.add_argument("--with-depth", action="store_const", const="both", dest="depth",
                       help="meet the target with the mix of dropped branches and width whose "
                       "outputs change least (measured on the calibration data)")
    depth.add_argument("--block-criterion", choices=["output", "influence", "weight"],
                       help="rank branches by the output change when each is zeroed "
                       "(output, default with data), 1 - cosine of the residual stream "
                       "across it (influence), or a weight-norm proxy (default without data)")
    depth.add_argument("--iterative-blocks", action="store_true", help="choose branches one at "
                       "a time, re-scoring the rest after each (output criterion)")
    p.set_defaults(depth="width")
    p.add_argument("--calib", metavar="PATH", help="calibration data: an .npz keyed by input "
                   "name (samples on axis 0) or a folder of .npz/.npy files")
    p.add_argument("--random", type=int, default=0, metavar="N", help="calibrate on N random "
                   "samples from the declared input shapes (bind symbolic dims with --dim)")
    p.add_argument("--calib-mask", metavar="INPUT", help="the calibration input marking valid "
                   "positions (1) and padding (0), e.g. attention_mask: padding is left out of "
                   "the statistics")
    p.add_argument("--providers", nargs="+", metavar="EP", help="onnxruntime execution "
                   "providers for calibration runs (default: CPUExecutionProvider)")
    p.add_argument("--allocation", choices=["uniform", "global", "latency", "one-sided"],
                   default="uniform",
                   help="uniform: --ratio of every group (targets search that ratio); global: "
                   "--ratio of all channels, lowest normalised scores model-wide, no group "
                   "losing more than 90%% (targets search that share; obs scores go per "
                   "MAC and --ratio is the share of channel MACs); "
                   "latency: channels by "
                   "normalised score per millisecond from an onnxruntime profile of the model, "
                   "--ratio the share of profiled channel time removed, same floors as global; "
                   "one-sided: --ratio of every group of the largest-MACs set in which no Conv "
                   "or MatMul loses channels on both sides, so the speedup keeps up with the "
                   "MACs saved (targets the set cannot reach search every group)")
    p.add_argument("--round-to", type=_round_to, default=None, metavar="N|auto",
                   help="kept channels are a multiple of N; auto: onnxruntime's NCHWc block "
                   "on this CPU (16 with AVX-512, 8 with AVX2), which makes pruned depthwise "
                   "CNNs much faster (default 1; auto with --allocation latency or one-sided); "
                   "counts round up, or class by class where rounding up misses a target by "
                   "over 10%%")
    p.add_argument("--min-channels", type=int, default=1, help="keep at least N channels")
    p.add_argument("--exclude", nargs="*", default=[], metavar="PATTERN",
                   help="node or tensor names (globs) whose groups are kept")
    p.add_argument("--allow-approximate", action="store_true", help="also prune groups that "
                   "LayerNorm/Softmax normalise over (labelled approximate)")
    p.add_argument("--compensate", action="store_true", help="fold the calibration mean of "
                   "removed channels into the consumers' biases (needs --calib or --random)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="least-squares refit of the kept weights of MatMul/Gemm/Conv "
                   "consumers from calibration data (default: on with data when its Gram "
                   "matrices fit in 1 GiB)")
    p.add_argument("--sequential-refit", action="store_true", default=None,
                   help="after the refit, refit every MatMul/Gemm/Conv downstream of a "
                   "removal, in graph order, to give what it gave in the original from the "
                   "pruned network's inputs (two calibration passes per stage; best accuracy "
                   "at low MACs)")
    p.add_argument("--head-dim", action="store_true", help="prune inside every attention head "
                   "(head_dim) instead of removing whole heads; applies to every split dim")
    p.add_argument("--no-verify", action="store_true", help="skip the oracle (not recommended)")
    p.add_argument("--approximate-min-cosine", type=float, default=0.9, metavar="T",
                   help="with --allow-approximate: the written model's outputs must keep at "
                   "least this cosine to the masked original (default 0.9), else exit 1")
    p.add_argument("--report", type=Path, help="write report.json, report.md and plots here")
    p.add_argument("--plan-out", type=Path, help="write the removal plan as JSON")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="bind a symbolic input dim (batch=1) or an input's whole shape "
                        "(x=1,3,736,1280); costs count at these sizes, open axes take the "
                        "first calibration batch's, else a size the model runs at")
    p.set_defaults(run=_prune)

    p = sub.add_parser("verify", parents=[common], help="check a pruned model against its original",
                       description="Rebuild the masked original from the plan stored in the "
                       "pruned model and compare outputs on random inputs.")
    p.add_argument("original")
    p.add_argument("pruned")
    p.add_argument("--samples", type=int, default=2, help="number of random inputs (the "
                   "first at one size, the others at a second size where dims are symbolic)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(run=_verify)

    p = sub.add_parser("bench", parents=[common], help="compare params, MACs and onnxruntime latency of two models")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(run=_bench)
    return parser


def _terminate(signum, frame) -> None:  # SIGTERM unwinds like Ctrl-C: temp files go
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit codes: 0 ok, 1 verification failed, 2 bad usage or input, 3 internal
    error (``--debug`` shows the traceback), 130 interrupted."""
    from onnxprune.sessions import set_tmp_dir

    args = build_parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        set_tmp_dir(args.tmp_dir)
        return args.run(args, out, err)
    except VerificationError as exc:
        print(f"onnxprune: verification failed: {exc}", file=sys.stderr)
        return 1
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a folder made read-only mid-way, ...
        where = f" ('{exc.filename}')" if exc.filename else ""
        print(f"onnxprune: error: {exc.strerror or exc}{where}; nothing was written",
              file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"onnxprune: internal error ({type(exc).__name__}: {first}); please report it "
              "with the command and model (run with --debug for the traceback)", file=sys.stderr)
        return 3
    finally:
        set_tmp_dir(None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
