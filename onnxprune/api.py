"""The Python API: :func:`analyze` a model, :func:`prune` it, get a :class:`PruneResult`.

``prune`` runs the whole pipeline: load -> analyse -> score -> allocate -> shrink -> clean up
-> verify (the oracle, on by default). Nothing is written until ``PruneResult.save``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.allocation import allocate_ratio, excluded_groups, search_ratio
from onnxprune.allocation_global import allocate_global
from onnxprune.analysis import Analysis
from onnxprune.analysis import analyze as build_channel_graph
from onnxprune.calibration import calibration_batches
from onnxprune.errors import UnsupportedModelError, UsageError, VerificationError
from onnxprune.finite import check_finite_corrections, nonfinite_weights
from onnxprune.groups import Group, form_groups
from onnxprune.importance import DATA_CRITERIA, consumer_keys, score_groups, unmeasured
from onnxprune.input_sizes import (
    decide_sizes,
    feeds_for_verification,
    random_inputs,
    shapes_text,
)
from onnxprune.latency import measure_latency
from onnxprune.metrics import ModelCost, model_cost, node_macs, parameter_counts
from onnxprune.model_io import (
    ModelSource,
    files_read,
    load_model,
    save_model,
    uses_external_data,
)
from onnxprune.passes.cleanup import CleanupPass, drop_intermediate_shapes
from onnxprune.passes.compensate import CompensatePass, compensation_fills, weight_axes
from onnxprune.passes.refit import apply_weight_updates, refit_updates
from onnxprune.passes.shrink import ShrinkPass
from onnxprune.plan import RemovalPlan, read_plan
from onnxprune.sessions import Staged, check_room_for, is_large, runs_on, staged
from onnxprune.skeleton import skeleton
from onnxprune.statistics import collect_statistics
from onnxprune.verify import Verification, compare, masked_model, similarity, verify_plan

Progress = Callable[[str, int, int], None]

#: Allocation strategies by name: (groups, scores, share, round_to=, min_channels=, skip=).
ALLOCATIONS: dict[str, Callable[..., dict[int, np.ndarray]]] = {
    "uniform": allocate_ratio, "global": allocate_global}  # fmt: skip

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
        proto = skeleton(self.analysis.model)
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
    model: ModelSource, *, head_dim: bool = False, progress: Progress | None = None,
    base_dir: str | Path | None = None,
) -> ModelAnalysis:
    """Load ``model`` and find its groups (prunable, approximate and blocked, with reasons).

    ``head_dim``: where a dim is split into factors (heads x head_dim), prune the innermost
    factor (head_dim, in every head alike) instead of the outermost (whole heads).
    ``base_dir``: the folder whose external data a ``ModelProto`` loaded without it reads."""
    source = None if isinstance(model, onnx.ModelProto | ir.Model) else Path(model)
    working = load_model(model, base_dir)
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
    #: the temporary copy a large verified model's weights live in until it is saved
    staged: Staged | None = field(default=None, repr=False)

    def to_proto(self) -> onnx.ModelProto:
        return ir.to_proto(self.model)

    def close(self) -> None:
        """Remove the temporary copy a large verified model was staged in (``model`` reads its
        weights from it: save first). Also done when the result is garbage collected."""
        if self.staged is not None:
            self.staged.remove()

    def __enter__(self) -> PruneResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self, path: str | Path) -> Path:
        """Write the pruned model atomically; a model that came with external data is written
        with external data. Refused over any file the input reads: a path input's ``.onnx``
        and every external-data file (an in-memory input has no file of its own, so saving
        it over the file it was once loaded from cannot be detected)."""
        return save_model(self.model, path, source=self.analysis.source,
                          external=bool(self.analysis.external_data),
                          protected=files_read(self.original),
                          movable=None if self.staged is None else self.staged.data)  # fmt: skip


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
                    target_macs: float | None, target_params: float | None,
                    providers: Sequence[str] | None = None,
                    ) -> Callable[[ir.Model], float]:  # fmt: skip
    """Kept fraction of MACs, params or onnxruntime latency of a candidate model."""
    if target_macs is not None:
        return lambda m: model_cost(m, dims).macs / max(cost.macs, 1)
    if target_params is not None:
        return lambda m: model_cost(m, dims).params / max(cost.params, 1)
    feed = random_inputs(original, dims)
    (base,) = measure_latency([original], feed, repeats=20, blocks=2, providers=providers)
    return lambda m: measure_latency([m], feed, repeats=20, blocks=2,
                                     providers=providers)[0].median_ms / max(base.median_ms, 1e-9)


def check_options(*, calibration_random: int, round_to: int, min_channels: int,
                  providers: Sequence[str] | None) -> None:  # fmt: skip
    """UsageError for option values that cannot mean anything."""
    for name, value in (("calibration_random (--random)", calibration_random),
                        ("round_to (--round-to)", round_to),
                        ("min_channels (--min-channels)", min_channels)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < (
                0 if name.startswith("calibration") else 1):  # fmt: skip
            raise UsageError(f"{name} must be a whole number "
                             f"{'>= 0' if name.startswith('calibration') else '>= 1'}, "
                             f"got {value!r}")  # fmt: skip
    if providers:
        import onnxruntime

        available = onnxruntime.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise UsageError(f"execution provider(s) {unknown} are not available in this "
                             f"onnxruntime; available: {available}")  # fmt: skip


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
    approximate_min_cosine: float = 0.9,
    allocation: str = "uniform",
    base_dir: str | Path | None = None,
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
        inputs: feeds for verification (as given); else up to two calibration batches plus
            a random feed at a second size, else random feeds at two sizes
            (:mod:`onnxprune.input_sizes`).
        dims: sizes for symbolic input dims by name (``{"batch": 1}``), or an input's whole
            shape by input name (``{"x": (1, 3, 736, 1280)}``). Costs count at these sizes;
            axes they leave open take the first of ``inputs`` (else of the calibration data),
            else a size the model runs at (tried: batch 1, 16.. tokens, 224.. pixels).
        approximate_min_cosine: with approximate groups pruned, the written model's outputs
            must keep at least this cosine to the masked original.
        allocation: ``uniform`` (``ratio`` of every group; targets search that ratio) or
            ``global`` (``ratio`` of all channels, the lowest normalised scores model-wide,
            no group losing more than 90%; targets search that share).
        base_dir: for a ``ModelProto`` loaded without its external data, the folder of the
            model file (its data is read from there, never from elsewhere).
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
    for name, value in targets.items():
        if name != "plan" and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)):  # fmt: skip
            raise UsageError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if plan is not None and not isinstance(plan, str | Path | Mapping):
        raise UsageError(f"plan must be a path or a dict, got {type(plan).__name__}")
    if not isinstance(model, str | Path | onnx.ModelProto | ir.Model):
        raise UsageError("model must be a path, an onnx.ModelProto or an onnx_ir.Model, got "
                         f"{type(model).__name__}")  # fmt: skip
    if inputs is not None and (isinstance(inputs, Mapping) or not all(
            isinstance(f, Mapping) for f in inputs)):  # fmt: skip
        raise UsageError("inputs must be a list of feeds (dicts of input name -> array)")
    if allocation not in ALLOCATIONS:
        raise UsageError(f"allocation must be one of {sorted(ALLOCATIONS)}, got {allocation!r}")
    given = [k for k, v in targets.items() if v is not None]
    if len(given) != 1:
        raise UsageError(f"give exactly one of {', '.join(targets)} (got {given or 'none'})")
    if inputs is not None and len(inputs) == 0:
        raise UsageError("inputs= is empty: give at least one feed to verify on, or leave it "
                         "out to verify on generated inputs")  # fmt: skip
    if not 0.0 < approximate_min_cosine <= 1.0:
        raise UsageError(f"approximate_min_cosine must be in (0, 1], got {approximate_min_cosine}")
    timings: dict[str, float] = {}
    warnings: list[str] = []
    start = time.perf_counter()
    dims = dict(dims or {})

    def step(stage: str, done: int, total: int = 1) -> None:
        if progress is not None:
            progress(stage, done, total)

    plan_data = read_plan(plan) if plan is not None else None
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    check_options(calibration_random=calibration_random, round_to=round_to,
                  min_channels=min_channels, providers=providers)
    if plan_data is not None and plan_data.get("refit_weights"):
        if calibration is None and not calibration_random:
            raise UsageError("the plan was made with a least-squares refit, which it does not "
                             "store: give the same calibration data to recompute it, or "
                             "--no-refit to apply only its channel choice")  # fmt: skip
        refit = True if refit is None else refit
        if compensate is None:
            compensate = plan_data.get("options", {}).get("compensate")
    analysis = analyze(model, head_dim=head_dim, progress=progress, base_dir=base_dir)
    check_room_for(analysis.analysis.model)
    timings["analyse_s"] = time.perf_counter() - start
    groups = analysis.groups
    skip = excluded_groups(analysis.analysis, groups, list(exclude))
    eligible = [g for g in groups if g.prunable and (allow_approximate or g.exact)]
    has_data = calibration is not None or calibration_random > 0
    criterion = criterion or ("fluctuation" if has_data else "l2")
    if criterion in DATA_CRITERIA and not has_data:
        raise UsageError(f"criterion '{criterion}' needs calibration data "
                         "(calibration= or calibration_random=)")  # fmt: skip
    original = _copy(analysis.analysis.model)
    warnings += nonfinite_weights(original, "the input model")

    sizes = None

    def batches():
        return calibration_batches(analysis.analysis.model, calibration,
                                   random=calibration_random,
                                   dims=dims if sizes is None else sizes.dims)  # fmt: skip

    if not (calibration is None or isinstance(calibration, str | Path | list | tuple)):
        once = list(calibration_batches(analysis.analysis.model, calibration))  # read once
        batches = lambda: once  # noqa: E731
    # one decision of the input sizes: verification, costs and random calibration use it
    real = [dict(f) for f in inputs] if inputs is not None else (
        list(itertools.islice(batches(), 2)) if calibration is not None else [])
    step("input sizes", 0)
    # a large model is only run to choose sizes where something runs it anyway
    probe = verify or has_data or target_latency is not None or not is_large(original)
    sizes = decide_sizes(original, dims, real[0] if real else None,
                         runs_on(original) if probe else None)  # fmt: skip
    step("input sizes", 1)
    stats = None
    if has_data:
        t = time.perf_counter()
        keys = consumer_keys(eligible)
        gram = refit_keys(analysis.analysis, eligible)
        if refit is None:
            shapes = {v.name: v.shape for v in analysis.analysis.values.values()}
            need = sum(8 * shapes[name][axis] ** 2 for name, axis in gram
                       if shapes.get(name) is not None
                       and isinstance(shapes[name][axis], int))  # fmt: skip
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
    fallback = unmeasured(eligible, stats) if criterion in DATA_CRITERIA else []
    if fallback:
        warnings.append(f"{len(fallback)} group(s) have no float consumer input to measure, so "
                        f"'{criterion}' cannot rank them; they are ranked by L2 weight magnitude "
                        f"(groups {fallback[:8]}{' ...' if len(fallback) > 8 else ''})")  # fmt: skip
    for gid, values in scores.items():
        if not np.all(np.isfinite(values)):
            warnings.append(f"group {gid}: {int(np.sum(~np.isfinite(values)))} channel scores "
                            "are not finite (NaN/inf weights or statistics); they rank as the "
                            "least important")  # fmt: skip
            scores[gid] = np.nan_to_num(values, nan=-np.inf, posinf=-np.inf)
    step("score", 1)
    timings["score_s"] = time.perf_counter() - t
    cost_dims = sizes.dims
    cost_before = model_cost(original, cost_dims)

    allocate = ALLOCATIONS[allocation]

    def plan_for(r: float) -> RemovalPlan:
        removed = allocate(eligible, scores, r, round_to=round_to, min_channels=min_channels,
                           skip=skip)  # fmt: skip
        return RemovalPlan.build(groups, removed)

    t = time.perf_counter()
    target = next((v for v in (target_macs, target_params, target_latency) if v is not None), None)
    if target is not None:
        measure = _target_measure(original, cost_dims, cost_before, target_macs, target_params,
                                  providers)  # fmt: skip
        searched = 0
        reached: dict[float, float] = {}

        def kept_fraction(r: float) -> float:
            nonlocal searched
            searched += 1
            step("search ratio", searched, 13)
            reached[r] = measure(_shrunk(original, plan_for(r), check=False))
            return reached[r]

        ratio = search_ratio(kept_fraction, target)
        step("search ratio", 13, 13)
        if reached.get(ratio, 0.0) > target:
            warnings.append(f"target {target:g} is out of reach: removing the most this allows "
                            f"(ratio {ratio:.2f}) keeps {reached[ratio]:.1%}")  # fmt: skip
    if plan_data is not None:
        removal = RemovalPlan.build(groups, load_removed(plan_data, eligible))
        if not plan_data.get("refit_weights") or refit:  # refit fills go with refit weights
            removal.fills = RemovalPlan.read_fills(plan_data)
        if any(k >= len(removal.masks) or np.shape(v) != np.shape(removal.masks[k].removed)
               for k, v in removal.fills.items()):  # fmt: skip
            raise UsageError("the plan's compensation does not fit this model's masks")
        ratio = float("nan")
    else:
        removal = plan_for(ratio)
        untouched = [g.id for g in eligible if g.id in scores and g.id not in removal.removed
                     and g.id not in skip]  # fmt: skip
        if ratio > 0 and untouched and allocation == "uniform":
            warnings.append(f"{len(untouched)} of {len(eligible)} prunable groups lose no "
                            f"channel at ratio {ratio:.3g} (too few channels or units to remove "
                            f"a whole one; groups {untouched[:8]}"
                            f"{' ...' if len(untouched) > 8 else ''})")  # fmt: skip
    if not removal.removed and (ratio or 0) > 0:
        warnings.append("nothing is removed: no prunable group can lose a channel")
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
        check_finite_corrections(removal)

    correct(plan)
    fills = plan.fills
    t = time.perf_counter()
    step("rewrite", 0)
    pruned = _shrunk(original, plan)
    step("rewrite", 1)
    timings["rewrite_s"] = time.perf_counter() - t
    cost_after = model_cost(pruned, cost_dims)

    verification = similarity_check = staging = None
    if verify and is_large(pruned):  # its weights go to a file before sessions read them
        step("stage", 0)
        staging = staged(pruned)
        pruned = staging.model
        step("stage", 1)
    if verify:
        t = time.perf_counter()
        step("verify", 0)
        feeds = feeds_for_verification(original, sizes, inputs, real)
        try:
            verification, similarity_check = _verified(
                _as_loaded(model, base_dir), original, pruned, plan, groups, feeds, correct,
                approximate_min_cosine)  # fmt: skip
        except BaseException:
            if staging is not None:
                staging.remove()
            raise
        step("verify", 1)
        timings["verify_s"] = time.perf_counter() - t
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
        "approximate_min_cosine": approximate_min_cosine,
        "approximate_pruned": bool(set(plan.removed) & {g.id for g in groups if g.approximate}),
        "cost_input_shapes": {k: list(v) for k, v in sizes.shapes.items()},
        "second_input_shapes": None if sizes.second is None
        else {k: list(v) for k, v in sizes.second.items()},
        "probed_dims": sizes.probed, "probed_by_running": sizes.ran, "warnings": warnings, "allocation": allocation,
    }  # fmt: skip
    return PruneResult(
        pruned, original, groups, plan, scores, float(ratio), cost_before, cost_after,
        verification, similarity_check, analysis, options, timings, staging,
    )


def _verified(source: ir.Model | onnx.ModelProto | str, original: ir.Model, pruned: ir.Model,
              plan: RemovalPlan, groups: list[Group], feeds: list,
              correct: Callable[[RemovalPlan], None],
              min_cosine: float) -> tuple[Verification, Verification | None]:  # fmt: skip
    """The oracle's verdicts; raises VerificationError when the pruned model fails it."""
    try:
        verification, similarity_check = _oracle(source, original, pruned, plan, groups, feeds,
                                                 correct, min_cosine)  # fmt: skip
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{exc}; so the pruned model cannot be verified: prune "
                                    "with --no-verify (verify=False) to write it "
                                    "unverified") from exc
    if not verification.passed:
        raise VerificationError(
            f"pruned model differs from the masked original: {verification.note} "
            f"(max |diff| {verification.max_abs_diff:.3g}, at "
            f"{'; '.join(shapes_text(s) for s in verification.input_shapes)}); please "
            "report this model"
        )
    if similarity_check is not None and not similarity_check.passed:
        raise VerificationError(
            f"approximate groups change the outputs too much: cosine "
            f"{similarity_check.min_cosine:.4f} below the threshold {min_cosine} "
            "(prune less, or lower approximate_min_cosine / --approximate-min-cosine)"
        )
    return verification, similarity_check


def _oracle(source: ir.Model | onnx.ModelProto | str, original: ir.Model, pruned: ir.Model,
            plan: RemovalPlan, groups: list[Group], feeds: list,
            correct: Callable[[RemovalPlan], None], min_cosine: float) -> tuple[Verification, Verification | None]:  # fmt: skip
    """The oracle on ``feeds``: pruned == masked original for the exact groups (approximate
    groups, when pruned, by cosine of the written model to the masked original), and the
    normalised working copy == the model as the user gave it."""
    approximate_ids = {g.id for g in groups if g.approximate}
    similarity_check = None
    if approximate_ids & set(plan.removed):
        exact_plan = RemovalPlan.build(
            groups, {k: v for k, v in plan.removed.items() if k not in approximate_ids}
        )
        correct(exact_plan)
        verification = verify_plan(original, _shrunk(original, exact_plan), exact_plan, feeds)
        verification.add_note("oracle run on the exact groups (the model written has the "
                              "approximate groups pruned too)")  # fmt: skip
        similarity_check = similarity(masked_model(original, plan), pruned, feeds, min_cosine)
    else:
        verification = verify_plan(original, pruned, plan, feeds)
    reference = compare(source, original, feeds)
    if not reference.passed:
        verification.passed = False
        verification.add_note("the normalised working copy differs from the input model "
                              f"({reference.note}); please report this model")  # fmt: skip
    else:
        verification.add_note("the working copy equals the input model")
    return verification, similarity_check


def _as_loaded(model: ModelSource, base_dir: str | Path | None) -> ir.Model | onnx.ModelProto | str:
    """The model as the user gave it, for the reference check: a path is opened by
    onnxruntime from the file itself; a proto reading external data from ``base_dir`` is
    loaded (not normalised) with it."""
    if isinstance(model, onnx.ModelProto) and base_dir is not None:
        return load_model(model, base_dir)
    if isinstance(model, onnx.ModelProto | ir.Model):
        return model
    return str(model)
