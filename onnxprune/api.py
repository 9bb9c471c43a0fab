"""The Python API: :func:`analyze` a model, :func:`prune` it, get a :class:`PruneResult`.

``prune`` runs the whole pipeline: load -> analyse -> score -> allocate -> shrink -> clean up
-> verify (the oracle, on by default). Nothing is written until ``PruneResult.save``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.allocation import allocate_ratio, excluded_groups, search_ratio
from onnxprune.analysis import Analysis
from onnxprune.analysis import analyze as build_channel_graph
from onnxprune.calibration import calibration_batches
from onnxprune.errors import UsageError, VerificationError
from onnxprune.groups import Group, form_groups
from onnxprune.importance import DATA_CRITERIA, consumer_keys, score_groups
from onnxprune.latency import bound_input_shapes, fed_dims, measure_latency, random_inputs
from onnxprune.metrics import ModelCost, model_cost, node_macs, parameter_counts
from onnxprune.model_io import ModelSource, load_model, save_model, uses_external_data
from onnxprune.passes.cleanup import CleanupPass, drop_intermediate_shapes
from onnxprune.passes.compensate import CompensatePass, compensation_fills, weight_axes
from onnxprune.passes.refit import apply_weight_updates, refit_updates
from onnxprune.passes.shrink import ShrinkPass
from onnxprune.plan import RemovalPlan
from onnxprune.statistics import collect_statistics
from onnxprune.verify import Verification, compare, verify_plan

Progress = Callable[[str, int, int], None]

#: Gram matrices for the default refit may take this many bytes (float64, channels² each).
REFIT_MEMORY = 1 << 30


@dataclass
class ModelAnalysis:
    """A model's channel graph and groups, as ``onnxprune analyze`` shows them."""

    analysis: Analysis
    groups: list[Group]
    source: Path | None = None
    external_data: bool = False

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def prunable_share(self) -> float:
        """Share of produced channels (outside groups blocked only by the model interface)
        that lie in prunable groups."""
        total = sum(g.width for g in self.groups if not g.interface_only())
        return sum(g.width for g in self.prunable) / total if total else 0.0

    def prunable_cost_share(self, dims: Mapping[str, int] | None = None) -> dict[str, float]:
        """Share of parameters (initializers with an axis in a prunable group) and of MACs
        (nodes reading or writing such a channel) that pruning can reduce."""
        proto = ir.to_proto(self.analysis.model)
        touched = {d.tensor for g in self.prunable for d in g.atom_of}
        params = parameter_counts(proto)
        macs = {k: v or 0 for k, v in node_macs(proto, dict(dims or {})).items()}
        reach = {node.name for node in proto.graph.node
                 if touched.intersection(node.input) or touched.intersection(node.output)}
        total_params, total_macs = sum(params.values()), sum(macs.values())
        return {
            "params": sum(n for t, n in params.items() if t in touched) / total_params
            if total_params else 0.0,
            "macs": sum(m for n, m in macs.items() if n in reach) / total_macs
            if total_macs else 0.0,
        }  # fmt: skip


def analyze(
    model: ModelSource, *, head_dim: bool = False, progress: Progress | None = None
) -> ModelAnalysis:
    """Load ``model`` and find its groups (prunable, approximate and blocked, with reasons).

    ``head_dim``: where a dim is split into factors (heads x head_dim), prune the innermost
    factor (head_dim, in every head alike) instead of the outermost (whole heads)."""
    source = None if isinstance(model, onnx.ModelProto | ir.Model) else Path(model)
    working = load_model(model)
    external = uses_external_data(working)
    step = None if progress is None else (lambda i, n: progress("analyse", i, n))
    analysis = build_channel_graph(working, progress=step)
    return ModelAnalysis(analysis, form_groups(analysis, inner=head_dim), source, external)


@dataclass
class PruneResult:
    """The pruned model and everything known about how it was made."""

    model: ir.Model
    original: ir.Model
    groups: list[Group]
    plan: RemovalPlan
    scores: dict[int, np.ndarray]
    ratio: float
    cost_before: ModelCost
    cost_after: ModelCost
    verification: Verification | None
    similarity: Verification | None
    analysis: ModelAnalysis
    options: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_proto(self) -> onnx.ModelProto:
        return ir.to_proto(self.model)

    def save(self, path: str | Path) -> Path:
        """Write the pruned model atomically (never over the input file); a model that came
        with external data is written with external data."""
        return save_model(
            self.model, path, source=self.analysis.source, external=self.analysis.external_data
        )


def _describe(calibration: Any) -> str | None:
    if calibration is None or isinstance(calibration, str | Path):
        return None if calibration is None else str(calibration)
    return type(calibration).__name__


def _copy(model: ir.Model) -> ir.Model:
    return model.clone()


def _shrunk(original: ir.Model, plan: RemovalPlan, *, check: bool = True) -> ir.Model:
    model = _copy(original)
    apply_weight_updates(model, plan.weight_updates)
    ShrinkPass(plan)(model)
    if plan.fills:
        nodes = {node.name: node for node in original.graph}
        weights = {}
        for index in plan.fills:
            w = nodes[plan.masks[index].consumer.node].inputs[1]
            weights[w.name] = plan.weight_updates.get(w.name, w.const_value.numpy())
        CompensatePass(plan, weights)(model)
    CleanupPass(check=check)(model)
    return model


def _target_measure(original: ir.Model, dims: dict, cost: ModelCost,
                    target_macs: float | None, target_params: float | None
                    ) -> Callable[[ir.Model], float]:  # fmt: skip
    """Kept fraction of MACs, params or onnxruntime latency of a candidate model."""
    if target_macs is not None:
        return lambda m: model_cost(ir.to_proto(m), dims).macs / max(cost.macs, 1)
    if target_params is not None:
        return lambda m: model_cost(ir.to_proto(m), dims).params / max(cost.params, 1)
    feed = random_inputs(original, dims)
    (base,) = measure_latency([original], feed, repeats=20, blocks=2)
    return lambda m: measure_latency([m], feed, repeats=20, blocks=2)[0].median_ms / max(
        base.median_ms, 1e-9)


def load_removed(data: Mapping, eligible: list[Group]) -> dict[int, np.ndarray]:
    """Removed channels per group from a plan's data, checked against this model."""
    if "removed" not in data:
        raise UsageError("the plan has no 'removed' entry (write one with --plan-out)")
    ok = {g.id: g for g in eligible}
    removed: dict[int, np.ndarray] = {}
    for key, atoms in data["removed"].items():
        gid = int(key)
        group = ok.get(gid)
        if group is None:
            raise UsageError(f"the plan removes channels of group {gid}, which this model (with "
                             "these options) does not have as a prunable group")  # fmt: skip
        atoms = np.asarray(atoms, dtype=np.int64)
        if atoms.size and (atoms.min() < 0 or atoms.max() >= group.n_atoms
                           or atoms.size >= group.n_atoms):  # fmt: skip
            raise UsageError(f"the plan's channels for group {gid} do not fit its "
                             f"{group.n_atoms} channels")  # fmt: skip
        removed[gid] = atoms
    return removed


def refit_keys(analysis: Analysis, groups: list[Group]) -> set:
    """(tensor, axis) of the compensable consumer inputs, where refit needs Gram matrices."""
    keys = set()
    for group in groups:
        for dim, consumer in group.consumers:
            node = analysis.nodes.get(consumer.node)
            if node is None or dim.is_virtual or consumer.input_index != 0:
                continue
            if weight_axes(node) is not None:
                keys.add((dim.tensor, dim.axis))
    return keys


def prune(
    model: ModelSource,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    plan: str | Path | Mapping | None = None,
    criterion: str | None = None,
    round_to: int = 1,
    min_channels: int = 1,
    exclude: Sequence[str] = (),
    allow_approximate: bool = False,
    head_dim: bool = False,
    compensate: bool | None = None,
    refit: bool | None = None,
    calibration: Any = None,
    calibration_random: int = 0,
    providers: Sequence[str] | None = None,
    verify: bool = True,
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
    dims: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """Prune ``model`` and verify the result.

    Args:
        model: a path, ``onnx.ModelProto`` or ``onnx_ir.Model`` (never modified).
        ratio: fraction of each prunable group's channels to remove, in [0, 1).
        target_macs: keep this fraction of the original MACs (0.5 halves them); searches a
            uniform ratio.
        target_params: keep this fraction of the parameters (searches a uniform ratio).
        target_latency: keep this fraction of the onnxruntime latency at ``dims`` (measured
            while searching, 2 threads).
        plan: re-apply a removal plan (``PruneResult.plan.to_json`` or a dict with
            ``removed``: group id -> channels) made on this model with the same options.
            Give exactly one of ``ratio``, the targets or ``plan``.
        criterion: importance criterion (``l1``, ``l2``, ``bn_scale``, ``random``; with
            calibration data also ``activation``, ``fluctuation``, ``wanda``). Default:
            ``fluctuation`` with calibration data, else ``l2``.
        round_to: kept channel counts are multiples of this.
        min_channels: never keep fewer channels than this in a group.
        exclude: node or tensor names (globs) whose groups are left alone.
        allow_approximate: also prune groups an op normalises over (LayerNorm, Softmax).
        head_dim: prune inside every head (head_dim) instead of whole heads; rotary pairs
            (d, d + D/2) stay together because RoPE's rotate-half relates them.
        verify: run the oracle (pruned == masked original) and raise if it fails.
        inputs: feeds for verification; random ones from the declared shapes otherwise.
        dims: sizes for symbolic input dims by name (``{"batch": 1}``), or an input's whole
            shape by input name (``{"x": (1, 3, 736, 1280)}``). Costs count at these sizes;
            axes they leave open take the first of ``inputs`` (else of the calibration data),
            else 1.
        calibration: calibration data: a ``CalibrationDataReader``-like object, an iterable of
            feeds, an ``.npz`` file or a folder (see :mod:`onnxprune.calibration`).
        calibration_random: or this many random samples from the declared input shapes.
        providers: onnxruntime execution providers for the calibration runs.
        compensate: fold the calibration mean of removed channels into the consumers' biases
            (needs calibration data; off by default: on the digits CNN it did not help).
        refit: least-squares refit of the consumers' kept weights from calibration Gram
            matrices (MatMul/Gemm/1x1 Conv consumers; centred when ``compensate``). Default:
            on with calibration data when the Gram matrices fit in ``REFIT_MEMORY`` bytes.
        progress: callback ``(stage, done, total)``.

    Raises:
        UsageError: options out of range or matching nothing.
        VerificationError: the oracle failed.
    """
    targets = {"ratio": ratio, "target_macs": target_macs, "target_params": target_params,
               "target_latency": target_latency, "plan": plan}  # fmt: skip
    given = [k for k, v in targets.items() if v is not None]
    if len(given) != 1:
        raise UsageError(f"give exactly one of {', '.join(targets)} (got {given or 'none'})")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dims = dict(dims or {})

    def step(stage: str, done: int, total: int = 1) -> None:
        if progress is not None:
            progress(stage, done, total)

    plan_data = json.loads(Path(plan).read_text()) if isinstance(plan, str | Path) else plan
    if plan_data is not None and plan_data.get("refit_weights"):
        if calibration is None and not calibration_random:
            raise UsageError("the plan was made with a least-squares refit, which it does not "
                             "store: give the same calibration data to recompute it, or "
                             "--no-refit to apply only its channel choice")  # fmt: skip
        refit = True if refit is None else refit
        if compensate is None:
            compensate = plan_data.get("options", {}).get("compensate")
    analysis = analyze(model, head_dim=head_dim, progress=progress)
    timings["analyse_s"] = time.perf_counter() - start
    groups = analysis.groups
    skip = excluded_groups(analysis.analysis, groups, list(exclude))
    eligible = [g for g in groups if g.prunable and (allow_approximate or g.exact)]
    has_data = calibration is not None or calibration_random > 0
    criterion = criterion or ("fluctuation" if has_data else "l2")
    stats = None
    if criterion in DATA_CRITERIA or has_data:
        if not has_data:
            raise UsageError(f"criterion '{criterion}' needs calibration data "
                             "(calibration= or calibration_random=)")  # fmt: skip
        t = time.perf_counter()

        def batches():
            return calibration_batches(analysis.analysis.model, calibration,
                                       random=calibration_random, dims=dims)  # fmt: skip

        if not (calibration is None or isinstance(calibration, str | Path | list | tuple)):
            once = list(batches())  # a reader object can be read only once
            batches = lambda: once  # noqa: E731
        keys = consumer_keys(eligible)
        gram = refit_keys(analysis.analysis, eligible)
        if refit is None:
            sizes = {v.name: v.shape for v in analysis.analysis.values.values()}
            need = sum(8 * sizes[name][axis] ** 2 for name, axis in gram
                       if sizes.get(name) is not None
                       and isinstance(sizes[name][axis], int))  # fmt: skip
            refit = need <= REFIT_MEMORY
        stats = collect_statistics(
            analysis.analysis.model, keys, batches, providers=providers,
            gram=gram if refit else (),
            progress=None if progress is None else (lambda i, n: progress("calibrate", i, n)),
        )
        timings["calibrate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    step("score", 0)
    scores = score_groups(analysis.analysis, eligible, criterion, stats)
    step("score", 1)
    timings["score_s"] = time.perf_counter() - t
    original = _copy(analysis.analysis.model)
    # costs count at the input sizes that run: the first check input, else calibration batch
    first = inputs[0] if inputs else None
    if first is None and calibration is not None:
        first = next(iter(batches()), None)
    cost_dims = fed_dims(original, dims, first)
    cost_before = model_cost(ir.to_proto(original), cost_dims)
    cost_shapes, guessed = bound_input_shapes(original, cost_dims)

    def plan_for(r: float) -> RemovalPlan:
        removed = allocate_ratio(
            eligible, scores, r, round_to=round_to, min_channels=min_channels, skip=skip
        )
        return RemovalPlan.build(groups, removed)

    t = time.perf_counter()
    target = next((v for v in (target_macs, target_params, target_latency) if v is not None), None)
    if target is not None:
        measure = _target_measure(original, cost_dims, cost_before, target_macs, target_params)
        searched = 0

        def kept_fraction(r: float) -> float:
            nonlocal searched
            searched += 1
            step("search ratio", searched, 13)
            return measure(_shrunk(original, plan_for(r), check=False))

        ratio = search_ratio(kept_fraction, target)
        step("search ratio", 13, 13)
    if plan_data is not None:
        removal = RemovalPlan.build(groups, load_removed(plan_data, eligible))
        if not plan_data.get("refit_weights") or refit:  # refit fills go with refit weights
            removal.fills = RemovalPlan.read_fills(plan_data)
        if any(k >= len(removal.masks) for k in removal.fills):
            raise UsageError("the plan's compensation does not fit this model's masks")
        ratio = float("nan")
    else:
        removal = plan_for(ratio)
    plan = removal
    timings["allocate_s"] = time.perf_counter() - t
    refit = bool(refit)  # unset only where no data was read
    if (compensate or refit) and stats is None:
        raise UsageError("compensation and refit need calibration data (calibration= or "
                         "calibration_random=)")  # fmt: skip
    compensate = bool(compensate)

    def correct(removal: RemovalPlan) -> None:
        """Attach compensation fills and refit weights (computed for this plan's masks)."""
        if compensate:
            removal.fills = compensation_fills(original, removal, stats)
        if refit:
            removal.weight_updates, refit_fills = refit_updates(original, removal, stats,
                                                                centered=compensate)  # fmt: skip
            removal.fills |= refit_fills

    correct(plan)
    fills = plan.fills
    t = time.perf_counter()
    step("rewrite", 0)
    pruned = _shrunk(original, plan)
    step("rewrite", 1)
    timings["rewrite_s"] = time.perf_counter() - t
    cost_after = model_cost(ir.to_proto(pruned), cost_dims)

    verification = similarity = None
    if verify:
        t = time.perf_counter()
        step("verify", 0)
        feeds = list(inputs) if inputs is not None else [
            random_inputs(original, dims, seed=s) for s in range(2)
        ]
        approximate_ids = {g.id for g in groups if g.approximate}
        if approximate_ids & set(plan.removed):
            exact_plan = RemovalPlan.build(
                groups, {k: v for k, v in plan.removed.items() if k not in approximate_ids}
            )
            correct(exact_plan)
            verification = verify_plan(original, _shrunk(original, exact_plan), exact_plan, feeds)
            verification.note = "; ".join(filter(None, [
                verification.note,
                "oracle run on the exact groups; approximate groups by similarity"]))
            similarity = compare(original, pruned, feeds)
            similarity.note = "approximate: pruned versus the unpruned original"
        else:
            verification = verify_plan(original, pruned, plan, feeds)
        step("verify", 1)
        timings["verify_s"] = time.perf_counter() - t
        if not verification.passed:
            raise VerificationError(
                f"pruned model differs from the masked original by {verification.max_abs_diff:.3g} "
                f"(outputs: {verification.outputs}); please report this model"
            )
    drop_intermediate_shapes(pruned)
    timings["total_s"] = time.perf_counter() - start
    options = {
        "ratio": ratio, "target_macs": target_macs, "target_params": target_params,
        "target_latency": target_latency, "criterion": criterion,
        "calibration": _describe(calibration),
        "calibration_random": calibration_random, "compensate": bool(fills),
        "compensated_consumers": len(fills), "refit": refit,
        "refit_weights": len(plan.weight_updates),
        "round_to": round_to, "min_channels": min_channels, "exclude": list(exclude),
        "allow_approximate": allow_approximate, "head_dim": head_dim,
        "cost_input_shapes": cost_shapes, "cost_dims_taken_as_1": guessed,
    }  # fmt: skip
    return PruneResult(
        pruned, original, groups, plan, scores, float(ratio), cost_before, cost_after,
        verification, similarity, analysis, options, timings,
    )
