"""The pruning report: a JSON-able dict, a markdown page and PNG plots.

It lists every group (members, width before/after, scores, status, reasons), parameters and
MACs by op type before and after, latency when measured, and the verification figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onnxprune.api import ModelAnalysis, PruneResult
from onnxprune.graph_values import reads_constant
from onnxprune.groups import Group
from onnxprune.input_sizes import shapes_text


def _status(group: Group) -> str:
    return "blocked" if group.blocked else "approximate" if group.approximate else "exact"


ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}


def _kind(ma: ModelAnalysis, group: Group) -> str:
    """``heads`` when a canonical channel spans several positions and one of them is a batch
    axis of a MatMul of two activations (Q @ Kᵀ, softmax @ V) or the output of a fused
    attention op; ``head_dim`` when such a MatMul sees the group only on its matrix axes;
    ``blocks`` for other multi-position units (grouped convolution, channel shuffle);
    else ``channels``."""
    if group.atom_size <= 1:
        return "channels"
    values = ma.analysis.values
    kind = "blocks"
    for dim in group.atom_of:
        value = values.get(dim.tensor)
        if value is None or value.shape is None:
            continue
        producer = value.producer()
        if producer is not None and producer.op_type in ATTENTION_OPS:
            return "heads"
        for node, _ in value.uses():
            if node.op_type in ATTENTION_OPS:
                return "heads"
            if node.op_type == "MatMul" and not reads_constant(node):
                if dim.axis < len(value.shape) - 2:
                    return "heads"
                kind = "head_dim"
    return kind


def _group_row(ma: ModelAnalysis, group: Group) -> dict:
    values = ma.analysis.values
    producers = []
    for dim in group.produced:
        value = values.get(dim.tensor)
        node = value.producer() if value is not None else None
        if node is not None and node.name not in producers:
            producers.append(node.name)
    return {
        "id": group.id,
        "status": _status(group),
        "kind": _kind(ma, group),
        "channels": group.n_atoms,
        "unit": group.atom_size,
        "width": group.width,
        "members": len(group.atom_of),
        "member_tensors": sorted({d.tensor for d in group.atom_of})[:6],
        "producers": producers,
        "blocked": [str(r) for r in group.blocked],
        "approximate": [str(r) for r in group.approximate],
    }


def analysis_report(ma: ModelAnalysis) -> dict:
    """What ``onnxprune analyze`` shows: every group and why the blocked ones are blocked."""
    rows = [_group_row(ma, g) for g in ma.groups]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("exact", "approximate", "blocked")}
    return {
        "source": str(ma.source) if ma.source else None,
        "groups": rows,
        "counts": counts,
        "interface_only_blocked": sum(g.interface_only() for g in ma.groups),
        "prunable_share": ma.prunable_share(),
        "prunable_cost_share": ma.prunable_cost_share(),
        "unknown_ops": dict(ma.analysis.unknown_ops),
        "untied_initializers": ma.analysis.untied,
        **_blocks_section(ma),
    }


def _blocks_section(ma: ModelAnalysis) -> dict:
    """The removable residual branches (depth pruning) with their MACs share, the number of
    layers they form, and the weighted sums that are not removable with why."""
    found = ma.blocks
    share = ma.block_macs_share()
    return {
        "blocks": [b.to_dict() | {"macs_share": share[b.id]} for b in found.blocks],
        "layers": len(found.layers),
        "not_removable_blocks": [{"add": r.add, "reason": r.reason}
                                 for r in found.not_removable],
    }  # fmt: skip


def build_report(result: PruneResult, latency: dict | None = None) -> dict:
    """Everything known about a prune, as plain data."""
    report = analysis_report(result.analysis)
    by_id = {row["id"]: row for row in report["groups"]}
    for group in result.groups:
        row = by_id[group.id]
        removed = result.plan.removed.get(group.id, np.zeros(0))
        row["channels_after"] = group.n_atoms - int(removed.size)
        row["width_after"] = group.width - int(removed.size) * group.atom_size
        if group.id in result.scores:
            s = result.scores[group.id]
            row["score"] = {"min": float(s.min()), "mean": float(s.mean()), "max": float(s.max())}
    for row in report["blocks"]:
        if row["id"] in result.block_scores:
            row["score"] = result.block_scores[row["id"]]
        row["dropped"] = row["id"] in result.plan.blocks
    report.update(
        options=result.options,
        timings=result.timings,
        before=result.cost_before.to_dict(),
        after=result.cost_after.to_dict(),
        verification=result.verification.to_dict() if result.verification else None,
        similarity=result.similarity.to_dict() if result.similarity else None,
        warnings=result.options.get("warnings", []),
        latency=latency,
    )
    return report


def _markdown(report: dict) -> str:
    lines = ["# onnxprune report", ""]
    if report.get("source"):
        lines += [f"Model: `{report['source']}`", ""]
    if "before" in report:
        b, a = report["before"], report["after"]
        lines += ["| | before | after | kept |", "|---|---:|---:|---:|"]
        lines += [f"| parameters | {b['params']:,} | {a['params']:,} | {a['params'] / max(b['params'], 1):.1%} |"]
        lines += [f"| MACs | {b['macs']:,} | {a['macs']:,} | {a['macs'] / max(b['macs'], 1):.1%} |"]
        if report.get("latency"):
            lat = report["latency"]
            lines += [f"| latency (ms) | {lat['before_ms']:.3f} | {lat['after_ms']:.3f} | "
                      f"{lat['after_ms'] / lat['before_ms']:.1%} |"]
        lines += [""]
        v = report.get("verification")
        if v:
            verdict = "passed" if v["passed"] else "FAILED"
            shapes = "; ".join(shapes_text(f) for f in v.get("input_shapes", []))
            lines += [f"**Verification** (pruned == masked original): {verdict}, max |diff| "
                      f"{v['max_abs_diff']:.2e} over {v['samples']} input(s) at {shapes}. "
                      f"{v['note']}", "", "| output | max \\|diff\\| | rel. L2 | cosine | rule |",
                      "|---|---:|---:|---:|---|"]
            lines += [f"| {name} | {c['max_abs_diff']:.2e} | {c['rel_l2']:.2e} | "
                      f"{c['cosine']:.6f} | {c['rule']} |"
                      for name, c in v.get("checks", {}).items()]  # fmt: skip
            lines += [""]
        sim = report.get("similarity")
        if sim:
            lines += [f"**Approximate groups pruned**: output cosine to the masked original "
                      f"{sim['min_cosine']:.4f} (max |diff| {sim['max_abs_diff']:.3g}). "
                      f"{sim['note']}", ""]
        for warning in report.get("warnings", []):
            lines += [f"> warning: {warning}", ""]
        ops = sorted(set(b["macs_by_op"]) | set(a["macs_by_op"]))
        lines += ["## MACs by op type", "", "| op | before | after |", "|---|---:|---:|"]
        lines += [f"| {op} | {b['macs_by_op'].get(op, 0):,} | {a['macs_by_op'].get(op, 0):,} |"
                  for op in ops]
        lines += [""]
    c = report["counts"]
    lines += ["## Groups", "", f"{c['exact']} exact, {c['approximate']} approximate, "
              f"{c['blocked']} blocked; prunable share of channels {report['prunable_share']:.1%}.", ""]
    lines += ["| id | status | channels | unit | width | after | members | producers |",
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    for g in report["groups"]:
        lines += [f"| {g['id']} | {g['status']} | {g['channels']} | {g['unit']} | {g['width']} | "
                  f"{g.get('width_after', '')} | {g['members']} | {', '.join(g['producers'][:2])} |"]
    lines += _blocks_markdown(report)
    blocked = [g for g in report["groups"] if g["blocked"]]
    if blocked:
        lines += ["", "## Blocked groups", ""]
        lines += [f"- group {g['id']} ({g['width']} channels): {'; '.join(g['blocked'][:3])}"
                  for g in blocked]
    if report["unknown_ops"]:
        lines += ["", "Ops without a channel rule: " + ", ".join(
            f"{k} x{v}" for k, v in report["unknown_ops"].items())]
    if report["untied_initializers"]:
        lines += ["", "Accidentally shared initializers copied per reader: " + ", ".join(
            report["untied_initializers"])]
    return "\n".join(lines) + "\n"


def _blocks_markdown(report: dict) -> list[str]:
    blocks = report.get("blocks", [])
    lines = ["", "## Removable blocks (depth)", "",
             f"{len(blocks)} removable residual branches in {report.get('layers', 0)} layers; "
             f"{len(report.get('not_removable_blocks', []))} weighted sums not removable."]
    if blocks:
        lines += ["", "| block | layer | sum node | params | MACs share | score | dropped |",
                  "|---:|---:|---|---:|---:|---:|---|"]
        lines += [f"| {b['id']} | {b['layer']} | `{b['add']}` | {b['params']:,} | "
                  f"{b['macs_share']:.1%} | "
                  f"{'' if b.get('score') is None else format(b['score'], '.4g')} | "
                  f"{'yes' if b.get('dropped') else ''} |" for b in blocks]  # fmt: skip
    lines += [f"- `{r['add']}`: {r['reason']}" for r in report.get("not_removable_blocks", [])[:20]]
    search = report.get("options", {}).get("depth_search")
    if search:
        lines += ["", "Depth + width candidates for the target (`--with-depth`), each with its "
                  "refit/compensation; the least output change on the calibration data wins:",
                  "", "| blocks dropped | width ratio | groups pruned | output change |",
                  "|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['blocks']} | {r['ratio']:.3f} | {r['width_groups']} | "
                  f"{r['output_change']:.4g} |" for r in search]  # fmt: skip
    return lines


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(report: dict, directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    groups = [g for g in report["groups"] if "width_after" in g and g["status"] != "blocked"]
    if groups:
        fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.25), 3.5))
        x = np.arange(len(groups))
        ax.bar(x, [g["width"] for g in groups], color="#cfd8dc", label="before")
        ax.bar(x, [g["width_after"] for g in groups], color="#1e88e5", label="after")
        ax.set_xlabel("group")
        ax.set_ylabel("channels")
        ax.set_title("width per prunable group")
        ax.legend()
        written.append(_save(plt, fig, directory / "widths.png"))
    if "before" in report:
        ops = sorted(report["before"]["macs_by_op"])
        if ops:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            x = np.arange(len(ops))
            ax.bar(x - 0.2, [report["before"]["macs_by_op"][o] / 1e6 for o in ops], 0.4,
                   label="before", color="#cfd8dc")
            ax.bar(x + 0.2, [report["after"]["macs_by_op"].get(o, 0) / 1e6 for o in ops], 0.4,
                   label="after", color="#1e88e5")
            ax.set_xticks(x, ops)
            ax.set_ylabel("MMACs")
            ax.set_title("MACs by op type")
            ax.legend()
            written.append(_save(plt, fig, directory / "macs_by_op.png"))
    scored = [b for b in report.get("blocks", []) if b.get("score") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(max(5, len(scored) * 0.3), 3.2))
        ax.plot([b["id"] for b in scored], [b["score"] for b in scored], "-", color="#90a4ae")
        for dropped, color, label in ((False, "#1e88e5", "kept"), (True, "#e53935", "dropped")):
            pts = [b for b in scored if bool(b.get("dropped")) == dropped]
            if pts:
                ax.scatter([b["id"] for b in pts], [b["score"] for b in pts], color=color,
                           label=label, zorder=3)  # fmt: skip
        ax.set_xlabel("block (graph order)")
        ax.set_ylabel(f"score ({report.get('options', {}).get('block_criterion')})")
        ax.set_title("block importance")
        ax.legend()
        written.append(_save(plt, fig, directory / "block_scores.png"))
    return written


def write_report(report: dict, directory: str | Path) -> list[Path]:
    """Write report.json, report.md and (with matplotlib) PNG plots into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "report.json", directory / "report.md"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    md_path.write_text(_markdown(report))
    return [json_path, md_path, *_plots(report, directory)]
