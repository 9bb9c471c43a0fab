"""The Python API: :func:`analyze` a model, :func:`prune` it, get a :class:`PruneResult`.

``prune`` runs the whole pipeline: load -> analyse -> score -> allocate -> shrink -> clean up
-> verify (the oracle, on by default). Nothing is written until ``PruneResult.save``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.allocation import allocate_ratio, excluded_groups
from onnxprune.allocation_depth import (
    OutputError,
    candidate_depths,
    combined,
    fewest_blocks,
    inside,
)
from onnxprune.allocation_global import allocate_global
from onnxprune.allocation_latency import (
    allocate_latency,
    channel_costs,
    kernel_block,
    node_times,
)
from onnxprune.allocation_one_sided import allocate_one_sided, one_sided_groups
from onnxprune.analysis import Analysis
from onnxprune.analysis import analyze as build_channel_graph
from onnxprune.block_scores import CRITERIA as BLOCK_CRITERIA
from onnxprune.block_scores import DATA_CRITERIA as BLOCK_DATA_CRITERIA
from onnxprune.block_scores import MAX_FEEDS, rank_blocks
from onnxprune.blocks import Block, Blocks, find_blocks
from onnxprune.calibration import calibration_batches
from onnxprune.errors import UsageError
from onnxprune.finite import check_finite_corrections, nonfinite_weights
from onnxprune.groups import Group, form_groups
from onnxprune.importance import (
    COMPARABLE,
    DATA_CRITERIA,
    GRAM_CRITERIA,
    consumer_keys,
    rank,
)
from onnxprune.importance_obs import join_keys
from onnxprune.input_sizes import (
    decide_sizes,
    feeds_for_verification,
    random_inputs,
)
from onnxprune.metrics import ModelCost, checked_cost, model_cost, node_macs, parameter_counts
from onnxprune.model_io import (
    FILE_WEIGHTS,
    ModelSource,
    files_read,
    from_graphsurgeon,
    load_model,
    model_nbytes,
    save_model,
    uses_external_data,
)
from onnxprune.oracle import verify_pruned
from onnxprune.pages import small_pages
from onnxprune.passes.cleanup import check_rewritten, drop_intermediate_shapes
from onnxprune.passes.compensate import compensation_fills, weight_axes
from onnxprune.passes.refit import refit_updates
from onnxprune.passes.refit_sequential import sequential_refit as sequential_refit_pass
from onnxprune.plan import RemovalPlan, dropped_blocks, read_plan
from onnxprune.rewrite import rewrite
from onnxprune.sessions import FileModel, Staged, check_room_for, is_large, runs_on
from onnxprune.skeleton import skeleton
from onnxprune.statistics import collect_statistics
from onnxprune.targets import kept_measure, search_share
from onnxprune.verify import Verification

Progress = Callable[[str, int, int], None]

#: A target met with every class's kept count rounded up (``round_to``) that keeps less than
#: this share of the target is searched again with the rounding spread over classes.
OVERSHOT = 0.9

#: Allocation strategies by name: (groups, scores, share, round_to=, min_channels=, skip=);
#: ``latency`` also takes the model's cost table (``costs=``), measured when it is chosen,
#: and ``one-sided`` the set of groups it prunes (``chosen=``).
ALLOCATIONS: dict[str, Callable[..., dict[int, np.ndarray]]] = {
    "uniform": allocate_ratio, "global": allocate_global,
    "latency": allocate_latency, "one-sided": allocate_one_sided}  # fmt: skip

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

    @functools.cached_property
    def blocks(self) -> Blocks:
        """The removable residual branches (depth pruning) and the sums that are not."""
        return find_blocks(self.analysis.model)

    def _main_graph_macs(self, dims: Mapping[str, int] | None) -> dict[str, int]:
        """MACs of the main graph's nodes by name at ``dims`` (shape inference once per dims:
        ``analyze`` reports both shares below)."""
        cache = self.__dict__.setdefault("_macs_at", {})
        key = repr(sorted(dict(dims or {}).items()))
        if key not in cache:
            proto = skeleton(self.analysis.model)
            main = {node.name for node in proto.graph.node}
            cache[key] = {k: v or 0 for k, v in node_macs(proto, dict(dims or {})).items()
                          if k in main}  # fmt: skip
        return cache[key]

    def block_macs_share(self, dims: Mapping[str, int] | None = None) -> dict[int, float]:
        """Each removable block's share of the model's MACs (its branch nodes')."""
        macs = self._main_graph_macs(dims)
        total = sum(macs.values())
        return {b.id: sum(macs.get(n, 0) for n in b.nodes) / total if total else 0.0
                for b in self.blocks.blocks}  # fmt: skip

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
        macs = self._main_graph_macs(dims)
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
    model = from_graphsurgeon(model)
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
    #: the removable blocks considered (depth pruning) and their scores (lower goes first)
    blocks: list[Block] = field(default_factory=list)
    block_scores: dict[int, float] = field(default_factory=dict)

    def to_proto(self) -> onnx.ModelProto:
        return ir.to_proto(self.model)

    def to_graphsurgeon(self):
        """The pruned model as an ``onnx_graphsurgeon.Graph`` (needs onnx-graphsurgeon)."""
        import onnx_graphsurgeon as gs

        return gs.import_onnx(self.to_proto())

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
        with small_pages(0 if self.analysis.external_data else model_nbytes(self.model)):
            return save_model(self.model, path, source=self.analysis.source,
                              external=bool(self.analysis.external_data),
                              protected=files_read(self.original),
                              movable=None if self.staged is None else self.staged.data)  # fmt: skip


def _describe(calibration: Any) -> str | None:
    if calibration is None or isinstance(calibration, str | Path):
        return None if calibration is None else str(calibration)
    return type(calibration).__name__


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


def _held_bytes(model: ModelSource) -> int:
    """Bytes of weights a prune of ``model`` reads into memory: a file's own size (external
    data stays memory-mapped), an onnx-ir model's tensors unless they live in external data;
    0 for what cannot be sized here (a file that cannot be read is its load's to report)."""
    try:
        if isinstance(model, str | Path):
            return Path(model).stat().st_size
        if isinstance(model, ir.Model) and not uses_external_data(model):
            return model_nbytes(model)
    except OSError:
        pass
    return 0


def _small_pages_when_large(fn: Callable[..., PruneResult]) -> Callable[..., PruneResult]:
    """``prune`` with numpy's huge-page advice off where it reads ``pages.LARGE`` bytes of
    weights or more into memory (:mod:`onnxprune.pages`)."""

    @functools.wraps(fn)
    def wrapper(model: ModelSource, *args: Any, **kwargs: Any) -> PruneResult:
        with small_pages(_held_bytes(model)):
            return fn(model, *args, **kwargs)

    return wrapper


@_small_pages_when_large
def prune(
    model: ModelSource,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    plan: str | Path | Mapping | None = None,
    criterion: str | None = None,
    round_to: int | str | None = None,
    min_channels: int = 1,
    exclude: Sequence[str] = (),
    allow_approximate: bool = False,
    head_dim: bool = False,
    compensate: bool | None = None,
    refit: bool | None = None,
    sequential_refit: bool | None = None,
    calibration: Any = None,
    calibration_random: int = 0,
    calibration_mask: str | None = None,
    providers: Sequence[str] | None = None,
    verify: bool = True,
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
    dims: Mapping[str, int] | None = None,
    approximate_min_cosine: float = 0.9,
    allocation: str = "uniform",
    remove_blocks: int | None = None,
    depth: str = "width",
    block_criterion: str | None = None,
    iterative_blocks: bool = False,
    base_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """Prune ``model`` and verify the result.

    Args:
        model: a path, ``onnx.ModelProto``, ``onnx_ir.Model`` or ``onnx_graphsurgeon.Graph``
            (never modified).
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
            calibration data also ``activation``, ``fluctuation``, ``wanda`` and ``obs``, the
            error left after the refit, :mod:`onnxprune.importance_obs`). Default:
            ``fluctuation`` with calibration data, else ``l2``.
        round_to: kept channel counts are multiples of this; ``"auto"``: onnxruntime's NCHWc
            block on this CPU (16 with AVX-512, 8 with AVX2; see
            :func:`~onnxprune.allocation_latency.kernel_block`). Default: 1, and ``"auto"``
            with the ``latency`` and ``one-sided`` allocations. Counts round up; a uniform
            (or one-sided) MACs or params target that rounding up lands below ``OVERSHOT``
            (90%) of is searched again with the rounding spread class by class
            (``allocate_ratio``'s ``spread``).
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
        allocation: ``uniform`` (``ratio`` of every group; targets search that ratio),
            ``global`` (``ratio`` of all channels, the lowest normalised scores model-wide,
            no group losing more than 90%; targets search that share; with scores that
            compare across groups, ``obs``, the lowest score per MAC until ``ratio`` of the
            channels' MACs is gone) or ``latency``
            (channels by normalised score per millisecond, from an onnxruntime profile of
            the model; ``ratio`` is the share of the profiled channel time removed;
            :mod:`onnxprune.allocation_latency`) or ``one-sided`` (``ratio`` of every group
            of the largest-MACs set of groups no two of which one node reads and writes, so
            no Conv or MatMul loses channels on both sides and the speedup keeps up with the
            MACs saved; a target the set cannot reach is searched over every group;
            :mod:`onnxprune.allocation_one_sided`).
        remove_blocks: drop this many residual branches (sublayers: attention, MLP, residual
            blocks; :mod:`onnxprune.blocks`), the least important first; with ``ratio`` or
            a target, width is then pruned on what is left; alone, nothing else is removed.
        depth: ``width`` (channels only, the default), ``depth`` (whole branches only:
            ``ratio`` is the fraction of blocks to drop, a target drops the fewest that reach
            it) or ``both`` (a target met by the best measured mix of dropped branches and
            width; :mod:`onnxprune.allocation_depth`).
        block_criterion: how branches are ranked (:mod:`onnxprune.block_scores`):
            ``output`` (default with calibration data), ``influence``, or ``weight`` (the
            default without data, a weight-norm proxy).
        iterative_blocks: choose branches one at a time, re-scoring the rest after each
            (``output`` criterion).
        base_dir: for a ``ModelProto`` loaded without its external data, the folder of the
            model file (its data is read from there, never from elsewhere).
        calibration: calibration data: a ``CalibrationDataReader``-like object, an iterable of
            feeds, an ``.npz`` file or a folder (see :mod:`onnxprune.calibration`).
        calibration_random: or this many random samples from the declared input shapes.
        calibration_mask: the input of the calibration data that marks valid positions
            (nonzero) and padding (0), such as a transformer's ``attention_mask``: activation
            statistics (and the refit's Gram matrices) then leave padded positions out, for
            every activation whose leading axes have the mask's shape. Measured on MiniLM at
            ratio 0.5, batches of 32 texts (63% padding): retrieval 36.7% -> 39.4%.
        providers: onnxruntime execution providers for the calibration runs.
        compensate: fold the calibration mean of removed channels into the consumers' biases
            (needs calibration data; off by default: on the digits CNN it did not help).
        refit: least-squares refit of the consumers' kept weights from calibration Gram
            matrices (MatMul/Gemm/Conv consumers with group 1; centred when ``compensate``,
            except at padded convolutions). Default: on with calibration data when the Gram
            matrices fit in ``REFIT_MEMORY`` bytes.
        sequential_refit: then refit every linear consumer downstream of a removal, in graph
            order, to reproduce the original's inputs from the pruned network's (see
            :mod:`onnxprune.passes.refit_sequential`; two calibration passes per stage).
        progress: callback ``(stage, done, total)``.

    Raises:
        UsageError: options out of range or matching nothing.
        VerificationError: the oracle failed.
    """
    model = from_graphsurgeon(model)
    targets = {"ratio": ratio, "target_macs": target_macs, "target_params": target_params,
               "target_latency": target_latency, "plan": plan}  # fmt: skip
    _check_arguments(model, targets, inputs, allocation, approximate_min_cosine,
                     remove_blocks, depth, block_criterion)  # fmt: skip
    if round_to == "auto" or (round_to is None and allocation in ("latency", "one-sided")):
        round_to = kernel_block()
    elif round_to is None:
        round_to = 1
    check_options(calibration_random=calibration_random, round_to=round_to,
                  min_channels=min_channels, providers=providers)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    clock = _Clock(timings, progress)
    dims = dict(dims or {})
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    plan_data = read_plan(plan) if plan is not None else None
    refit, compensate, sequential_refit = _plan_corrections(
        plan_data, refit, compensate, sequential_refit,
        calibration is not None or calibration_random > 0)  # fmt: skip
    # load -> analyse
    with clock("analyse"):
        analysis = analyze(model, head_dim=head_dim, progress=progress, base_dir=base_dir)
        check_room_for(analysis.analysis.model)
    groups = analysis.groups
    skip = excluded_groups(analysis.analysis, groups, exclude)
    eligible = [g for g in groups if g.prunable and (allow_approximate or g.exact)]
    has_data = calibration is not None or calibration_random > 0
    _check_mask(calibration_mask, calibration, analysis.analysis.model)
    criterion = criterion or ("fluctuation" if has_data else "l2")
    if criterion in DATA_CRITERIA and not has_data:
        raise UsageError(f"criterion '{criterion}' needs calibration data "
                         "(calibration= or calibration_random=)")  # fmt: skip
    original = analysis.analysis.model  # read from here on, never changed (rewrite clones it)
    warnings: list[str] = []
    # feeds and input sizes, decided once: verification, costs and random calibration use them
    with clock("input sizes"):
        data = _Data(analysis.analysis.model, calibration, calibration_random, dims)
        real = [dict(f) for f in inputs] if inputs is not None else data.first(2)
        probe = verify or has_data or target_latency is not None or not is_large(original)
        probed = runs_on(original) if probe else None
        sizes = decide_sizes(original, dims, real[0] if real else None, probed)
        if probed is not None:
            probed.close()  # its outputs stay, for the oracle; its session goes
        data.dims = sizes.dims
    # width is not pruned when only blocks are dropped: no channel statistics or scores
    width = plan_data is not None or not (depth == "depth" or (
        remove_blocks is not None and all(v is None for v in targets.values())))  # fmt: skip
    if not width:
        if compensate or refit:
            raise UsageError("compensation and refit correct width pruning; dropping whole "
                             "blocks only (depth-only) has nothing for them to correct")
        refit = compensate = False
    # calibrate
    stats = None
    if has_data and width:
        with clock("calibrate"):
            stats, refit = _calibrate(analysis.analysis, eligible, data.batches, refit,
                                      providers, progress, calibration_mask,
                                      gram_scores=criterion in GRAM_CRITERIA)  # fmt: skip
    # score
    scores: dict[int, np.ndarray] = {}
    if width:
        with clock("score"):
            scores, notes = rank(analysis.analysis, eligible, criterion, stats)
            warnings += notes
    warnings[:0] = nonfinite_weights(original, "the input model")  # after the norms read them
    cost_before = model_cost(original, sizes.dims)
    refit = bool(refit)  # unset only where no data was read
    if (compensate or refit) and stats is None:
        raise UsageError("compensation and refit need calibration data (calibration= or "
                         "calibration_random=)")  # fmt: skip
    sequential = None
    if sequential_refit:
        if not refit:
            raise UsageError("the sequential refit refines the least-squares refit: it needs "
                             "calibration data and the refit (drop --no-refit)")  # fmt: skip
        sequential = functools.partial(sequential_refit_pass, original, batches=data.batches,
                                       providers=providers, mask=calibration_mask,
                                       progress=clock.steps("sequential refit"))  # fmt: skip
    correct = functools.partial(_correct, original, stats, bool(compensate), refit, sequential)
    # score blocks (depth)
    found: list[Block] = []
    block_feeds: list[dict] = []
    block_scores: dict[int, float] = {}
    order: list[int] = []
    if remove_blocks is not None or depth != "width" or (plan_data or {}).get("blocks"):
        found = [b for b in analysis.blocks.blocks if not _excluded_block(b, exclude)]
    if found and plan_data is None:
        with clock("score blocks"):
            block_criterion = block_criterion or ("output" if has_data else "weight")
            if block_criterion in BLOCK_DATA_CRITERIA and not has_data:
                raise UsageError(f"block criterion '{block_criterion}' needs calibration data "
                                 "(calibration= or calibration_random=)")  # fmt: skip
            if block_criterion == "weight":
                warnings.append("blocks are ranked by a weight-norm proxy (no calibration "
                                "data): give calibration data (--calib or --random N) to rank "
                                "them by their effect on the outputs")  # fmt: skip
            block_feeds = list(itertools.islice(data.batches(), MAX_FEEDS)) if has_data else []
            greedy = (remove_blocks if remove_blocks is not None else len(found)
                      ) if iterative_blocks else 0  # fmt: skip
            block_scores, order = rank_blocks(original, found, block_criterion, block_feeds,
                                              iterative=greedy, providers=providers,
                                              step=clock.steps("score blocks"))  # fmt: skip
    by_id = {b.id: b for b in found}

    def dropped_at(count: int) -> list[Block]:
        return [by_id[k] for k in order[:count]]

    # allocate
    allocate = ALLOCATIONS[allocation]
    if allocation == "global" and width and criterion in COMPARABLE:
        with clock("MACs costs"):
            costs = channel_costs(original, eligible, {
                name: macs or 0 for name, macs in node_macs(original, sizes.dims).items()})
        allocate = functools.partial(allocate_global, costs=costs)
    if allocation == "latency" and width:
        with clock("latency costs"):
            feed = random_inputs(original, sizes.dims)
            costs = channel_costs(original, eligible, node_times(original, feed, providers))
        allocate = functools.partial(allocate_latency, costs=costs)
    if allocation == "one-sided" and width:
        with clock("one-sided set"):
            chosen = one_sided_groups(original, eligible, {
                name: macs or 0 for name, macs in node_macs(original, sizes.dims).items()})
        allocate = functools.partial(allocate_one_sided, chosen=chosen)

    def plan_for(share: float, dropped: Sequence[Block] = ()) -> RemovalPlan:
        removed = allocate(eligible, scores, share, round_to=round_to, min_channels=min_channels,
                           skip=skip | inside(eligible, dropped))  # fmt: skip
        return RemovalPlan.build(groups, removed, dropped)

    search_rows: list[dict] = []
    with clock("allocate"):
        kind, target = next(((k, v) for k, v in (("macs", target_macs), ("params", target_params),
                                                 ("latency", target_latency)) if v is not None),
                            (None, None))  # fmt: skip
        if plan_data is not None:
            removal, ratio = _replayed(plan_data, groups, eligible, refit, found), float("nan")
        elif depth == "depth":
            removal, ratio, notes = _depth_only(original, groups, dropped_at, len(found), ratio,
                                                kind, target, sizes.dims, cost_before,
                                                providers)  # fmt: skip
            warnings += notes
        elif depth == "both" and found:
            removal, ratio, search_rows, notes = _combined(
                original, groups, plan_for, dropped_at, len(found), kind, target, sizes.dims,
                cost_before, providers, block_feeds or real or feeds_for_verification(
                    original, sizes, inputs, real), correct, clock)  # fmt: skip
            warnings += notes
        else:
            if depth == "both":
                warnings.append("the model has no removable block: width only")
            dropped = dropped_at(remove_blocks or 0)
            if remove_blocks is not None and remove_blocks > len(found):
                warnings.append(f"only {len(found)} removable blocks: all are dropped "
                                f"(remove_blocks={remove_blocks})")  # fmt: skip
            if target is not None:
                tried: dict[float, float] = {}
                ratio, notes = search_share(original, lambda r: plan_for(r, dropped), kind,
                                            target, sizes.dims, cost_before, providers,
                                            clock.steps("search ratio"), tried)  # fmt: skip
                fallback: list[str] = []  # kept past the spread's search, which resets notes
                if allocation == "one-sided" and tried.get(ratio, 0.0) > target:
                    reached, tried = tried[ratio], {}
                    allocate = allocate_ratio  # every group: the set alone falls short
                    ratio, notes = search_share(original, lambda r: plan_for(r, dropped),
                                                kind, target, sizes.dims, cost_before,
                                                providers, clock.steps("search ratio"),
                                                tried)  # fmt: skip
                    fallback.append(f"the one-sided set of groups keeps at least "
                                    f"{reached:.1%} of the {kind}: the target {target:.1%} was "
                                    "searched over every group (a uniform ratio)")  # fmt: skip
                if (allocation in ("uniform", "one-sided") and round_to > 1
                        and kind != "latency"
                        and tried.get(ratio, target) < OVERSHOT * target):  # fmt: skip
                    reached = tried[ratio]
                    allocate = functools.partial(allocate, spread=True)
                    ratio, notes = search_share(original, lambda r: plan_for(r, dropped),
                                                kind, target, sizes.dims, cost_before,
                                                providers, clock.steps("search ratio"))  # fmt: skip
                    notes.append(f"kept counts rounded to multiples of {round_to} class by "
                                 f"class (allocation.allocate_ratio's spread): rounding every "
                                 f"class up kept {reached:.1%} of the {kind} for the target "
                                 f"{target:.1%}")  # fmt: skip
                warnings += notes + fallback
            ratio = 0.0 if ratio is None else ratio
            removal = plan_for(ratio, dropped)
            if width:
                warnings += _unremoved(removal, eligible, scores, skip, ratio, allocation)
        if not removal and (ratio or 0) > 0:
            warnings.append("nothing is removed: no prunable group can lose a channel")
    # correct
    correct(removal)
    # rewrite
    with clock("rewrite"):
        pruned = rewrite(original, removal, check=False, keep_shapes=True)
        cost_after, checked = checked_cost(pruned, sizes.dims)
        check_rewritten(checked)
    # verify
    verdicts: tuple = (None, None)
    staging = None
    if verify:
        with clock("verify"):
            feeds = feeds_for_verification(original, sizes, inputs, real)
            weights = analysis.analysis.model.meta.get(FILE_WEIGHTS)
            source = FileModel(Path(model), weights) if weights else model  # shared, not reread
            pruned, staging, verdicts = verify_pruned(
                source, base_dir, original, pruned, removal, groups, feeds, correct,
                approximate_min_cosine, clock.step, probed)  # fmt: skip
    drop_intermediate_shapes(pruned)
    timings["total_s"] = time.perf_counter() - start
    options = {
        "ratio": ratio, "target_macs": target_macs, "target_params": target_params,
        "target_latency": target_latency, "criterion": criterion,
        "calibration": _describe(calibration),
        "calibration_random": calibration_random, "calibration_mask": calibration_mask,
        "compensate": bool(removal.fills),
        "compensated_consumers": len(removal.fills), "refit": refit,
        "sequential_refit": sequential is not None,
        "refit_weights": len(removal.weight_updates),
        "round_to": round_to, "min_channels": min_channels, "exclude": exclude,
        "allow_approximate": allow_approximate, "head_dim": head_dim,
        "approximate_min_cosine": approximate_min_cosine,
        "approximate_pruned": bool(set(removal.removed) & {g.id for g in groups
                                                           if g.approximate}),
        "cost_input_shapes": {k: list(v) for k, v in sizes.shapes.items()},
        "second_input_shapes": None if sizes.second is None
        else {k: list(v) for k, v in sizes.second.items()},
        "probed_dims": sizes.probed, "probed_by_running": sizes.ran, "warnings": warnings,
        "allocation": allocation, "depth": depth, "remove_blocks": remove_blocks,
        "block_criterion": block_criterion if found else None,
        "iterative_blocks": iterative_blocks, "blocks_removed": sorted(removal.blocks),
        "depth_search": search_rows,
    }  # fmt: skip
    return PruneResult(
        pruned, original, groups, removal, scores, float(ratio), cost_before, cost_after,
        verdicts[0], verdicts[1], analysis, options, timings, staging, found, block_scores,
    )


class _Clock:
    """Stage timings (``<stage>_s``) and progress callbacks."""

    def __init__(self, timings: dict[str, float], progress: Progress | None) -> None:
        self.timings, self.progress = timings, progress

    def step(self, stage: str, done: int, total: int = 1) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def steps(self, stage: str) -> Callable[[int, int], None]:
        return lambda done, total: self.step(stage, done, total)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        self.step(stage, 0)
        yield
        self.step(stage, 1)
        key = f"{stage.replace(' ', '_')}_s"
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start


def _check_mask(mask: Any, calibration: Any, model: ir.Model) -> None:
    """UsageError unless ``mask`` is None or names an input of the model and real calibration
    data comes with it."""
    if mask is None:
        return
    names = [v.name for v in model.graph.inputs]
    if not isinstance(mask, str) or mask not in names:
        raise UsageError(f"calibration_mask (--calib-mask) must name an input of the model "
                         f"({', '.join(names)}), got {mask!r}")  # fmt: skip
    if calibration is None:
        raise UsageError("calibration_mask (--calib-mask) marks padding in calibration data: "
                         "give the data (calibration= / --calib); random samples have none")


def _check_arguments(model: Any, targets: dict, inputs: Any, allocation: str,
                     approximate_min_cosine: float, remove_blocks: int | None = None,
                     depth: str = "width",
                     block_criterion: str | None = None) -> None:  # fmt: skip
    """UsageError for arguments of the wrong type or out of range."""
    _check_depth(targets, remove_blocks, depth, block_criterion)
    for name, value in targets.items():
        if name != "plan" and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)):  # fmt: skip
            raise UsageError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    plan = targets["plan"]
    if plan is not None and not isinstance(plan, str | Path | Mapping):
        raise UsageError(f"plan must be a path or a dict, got {type(plan).__name__}")
    if not isinstance(model, str | Path | onnx.ModelProto | ir.Model):
        raise UsageError("model must be a path, an onnx.ModelProto, an onnx_ir.Model or an "
                         "onnx_graphsurgeon.Graph, got "
                         f"{type(model).__name__}")  # fmt: skip
    if inputs is not None and (isinstance(inputs, Mapping) or not all(
            isinstance(f, Mapping) for f in inputs)):  # fmt: skip
        raise UsageError("inputs must be a list of feeds (dicts of input name -> array)")
    if allocation not in ALLOCATIONS:
        raise UsageError(f"allocation must be one of {sorted(ALLOCATIONS)}, got {allocation!r}")
    given = [k for k, v in targets.items() if v is not None]
    if len(given) != 1 and not (remove_blocks is not None and not given):
        raise UsageError(f"give exactly one of {', '.join(targets)} (got {given or 'none'})")
    if inputs is not None and len(inputs) == 0:
        raise UsageError("inputs= is empty: give at least one feed to verify on, or leave it "
                         "out to verify on generated inputs")  # fmt: skip
    if not 0.0 < approximate_min_cosine <= 1.0:
        raise UsageError(f"approximate_min_cosine must be in (0, 1], got {approximate_min_cosine}")


DEPTH_MODES = ("width", "depth", "both")


def _check_depth(targets: dict, remove_blocks: int | None, depth: str,
                 block_criterion: str | None) -> None:  # fmt: skip
    """UsageError for depth options that cannot mean anything together."""
    if depth not in DEPTH_MODES:
        raise UsageError(f"depth must be one of {list(DEPTH_MODES)}, got {depth!r}")
    if remove_blocks is not None and (isinstance(remove_blocks, bool) or not isinstance(
            remove_blocks, int) or remove_blocks < 0):  # fmt: skip
        raise UsageError(f"remove_blocks (--remove-blocks) must be a whole number >= 0, got "
                         f"{remove_blocks!r}")  # fmt: skip
    if remove_blocks is not None and depth != "width":
        raise UsageError("remove_blocks (--remove-blocks) fixes the depth: give it without "
                         "depth='depth'/'both' (--depth-only/--with-depth)")  # fmt: skip
    if remove_blocks is not None and targets.get("plan") is not None:
        raise UsageError("a plan (--plan) fixes the blocks it drops: give it without "
                         "remove_blocks (--remove-blocks)")  # fmt: skip
    if depth == "both" and targets.get("ratio") is not None:
        raise UsageError("depth='both' (--with-depth) mixes depth and width to meet a target: "
                         "give target_macs/target_params/target_latency, not a ratio")  # fmt: skip
    if block_criterion is not None and block_criterion not in BLOCK_CRITERIA:
        raise UsageError(f"block_criterion must be one of {list(BLOCK_CRITERIA)}, got "
                         f"{block_criterion!r}")  # fmt: skip


def _plan_corrections(plan_data: Mapping | None, refit: bool | None, compensate: bool | None,
                      sequential: bool | None, has_data: bool,
                      ) -> tuple[bool | None, bool | None, bool]:  # fmt: skip
    """A replayed plan made with a refit needs the data again (its weights are not stored);
    its compensation and sequential-refit settings are the plan's unless given. A sequential
    refit implies the refit."""
    if plan_data is not None and plan_data.get("refit_weights") and refit is not False:
        if not has_data:
            raise UsageError("the plan was made with a least-squares refit, which it does not "
                             "store: give the same calibration data to recompute it, or "
                             "--no-refit to apply only its channel choice")  # fmt: skip
        refit = True if refit is None else refit
        if compensate is None:
            compensate = plan_data.get("options", {}).get("compensate")
        if sequential is None and refit:
            sequential = plan_data.get("options", {}).get("sequential_refit")
    if sequential and refit is None:
        refit = True
    if sequential and not has_data:
        raise UsageError("the sequential refit needs calibration data (calibration= or "
                         "calibration_random=; --calib or --random N)")  # fmt: skip
    return refit, compensate, bool(sequential)


class _Data:
    """The calibration source as fresh iterables of feeds, at the decided sizes (``dims``,
    set once they are known); a reader object is read once and kept."""

    def __init__(self, model: ir.Model, calibration: Any, random: int, dims: dict) -> None:
        self.model, self.calibration, self.random, self.dims = model, calibration, random, dims
        self.once = None
        if not (calibration is None or isinstance(calibration, str | Path | list | tuple)):
            self.once = list(calibration_batches(model, calibration))

    def batches(self) -> Iterable[dict]:
        if self.once is not None:
            return self.once
        return calibration_batches(self.model, self.calibration, random=self.random,
                                   dims=self.dims)  # fmt: skip

    def first(self, count: int) -> list[dict]:
        """Up to ``count`` feeds of the real calibration data (none for random samples)."""
        if self.calibration is None:
            return []
        return list(itertools.islice(self.batches(), count))


def _calibrate(analysis: Analysis, eligible: list[Group], batches: Callable[[], Iterable[dict]],
               refit: bool | None, providers: Sequence[str] | None,
               progress: Progress | None, mask: str | None = None, *,
               gram_scores: bool = False) -> tuple[dict, bool | None]:  # fmt: skip
    """The calibrate stage: statistics of every consumer input (padding left out where
    ``mask`` names the input marking valid positions); Gram matrices where the refit or a
    Gram criterion (``gram_scores``) needs them (by default only where they fit in
    ``REFIT_MEMORY``). Returns (stats, refit)."""
    keys = consumer_keys(eligible) | (join_keys(analysis, eligible) if gram_scores else set())
    gram = refit_keys(analysis, eligible)
    shapes = {v.name: v.shape for v in analysis.values.values()}
    need = sum(8 * shapes[name][axis] ** 2 for name, axis in gram
               if shapes.get(name) is not None
               and isinstance(shapes[name][axis], int))  # fmt: skip
    fits = need <= REFIT_MEMORY
    if refit is None:
        refit = fits
    stats = collect_statistics(
        analysis.model, keys, batches, providers=providers,
        gram=gram if refit or (gram_scores and fits) else (),
        mask=mask, progress=None if progress is None else (lambda i, n: progress("calibrate", i, n)),
    )
    return stats, refit


def _replayed(plan_data: Mapping, groups: list[Group], eligible: list[Group],
              refit: bool | None, blocks: Sequence[Block] = ()) -> RemovalPlan:  # fmt: skip
    """A stored plan applied to this model (its fills only with the refit they go with)."""
    removal = RemovalPlan.build(groups, load_removed(plan_data, eligible),
                                dropped_blocks(plan_data, blocks))  # fmt: skip
    if not plan_data.get("refit_weights") or refit:
        removal.fills = RemovalPlan.read_fills(plan_data)
    if any(k >= len(removal.masks) or np.shape(v) != np.shape(removal.masks[k].removed)
           for k, v in removal.fills.items()):  # fmt: skip
        raise UsageError("the plan's compensation does not fit this model's masks")
    return removal


def _excluded_block(block: Block, patterns: Sequence[str]) -> bool:
    """A block whose sum or branch node matches an ``exclude`` pattern is kept."""
    names = [block.add, *block.nodes]
    return any(fnmatch.filter(names, p) for p in patterns)


def _depth_only(original: ir.Model, groups: list[Group],
                dropped_at: Callable[[int], list[Block]], count: int, ratio: float | None,
                kind: str | None, target: float | None, dims: dict, cost: ModelCost,
                providers: Sequence[str] | None) -> tuple[RemovalPlan, float, list[str]]:  # fmt: skip
    """Whole branches only: ``ratio`` of the blocks, or the fewest that reach ``target``."""
    if target is None:
        return RemovalPlan.build(groups, {}, dropped_at(int(round((ratio or 0) * count)))), \
            0.0, []
    measure = kept_measure(original, dims, cost, kind, providers)
    depth, notes = fewest_blocks(
        lambda d: measure(rewrite(original, RemovalPlan.build(groups, {}, dropped_at(d)),
                                  check=False, keep_shapes=True)), count, target)  # fmt: skip
    return RemovalPlan.build(groups, {}, dropped_at(depth)), 0.0, notes


def _combined(original: ir.Model, groups: list[Group], plan_for: Callable[..., RemovalPlan],
              dropped_at: Callable[[int], list[Block]], count: int, kind: str | None,
              target: float | None, dims: dict, cost: ModelCost,
              providers: Sequence[str] | None, feeds: list[dict],
              correct: Callable[[RemovalPlan], None],
              clock: _Clock) -> tuple[RemovalPlan, float, list[dict], list[str]]:  # fmt: skip
    """Depth and width to one target: the candidate mix of least output change on ``feeds``
    (:mod:`onnxprune.allocation_depth`), from width only to the depth-only plan of
    ``_depth_only``, each candidate measured with its corrections (refit, compensation) as
    it would be written."""
    assert kind is not None and target is not None
    deepest, _, _ = _depth_only(original, groups, dropped_at, count, None, kind, target, dims,
                                cost, providers)  # fmt: skip
    shares: dict[int, tuple[float, list[str]]] = {}

    def plan_at(depth: int) -> RemovalPlan:
        dropped = dropped_at(depth)
        shares[depth] = search_share(original, lambda r: plan_for(r, dropped), kind, target,
                                     dims, cost, providers)  # fmt: skip
        plan = plan_for(shares[depth][0], dropped)
        correct(plan)
        return plan

    error = OutputError(original, feeds, providers)
    plan, rows = combined(candidate_depths(len(deepest.blocks)), plan_at,
                          lambda p: error(rewrite(original, p, check=False)),
                          clock.steps("depth search"))  # fmt: skip
    for row in rows:
        row["ratio"] = shares[row["blocks"]][0]
    share, notes = shares[len(plan.blocks)]
    return plan, share, rows, notes


def _unremoved(removal: RemovalPlan, eligible: list[Group], scores: dict, skip: set,
               ratio: float, allocation: str) -> list[str]:  # fmt: skip
    """A warning when a uniform ratio removes no whole channel or unit of some groups."""
    untouched = [g.id for g in eligible if g.id in scores and g.id not in removal.removed
                 and g.id not in skip]  # fmt: skip
    if ratio > 0 and untouched and allocation == "uniform":
        return [f"{len(untouched)} of {len(eligible)} prunable groups lose no channel at ratio "
                f"{ratio:.3g} (too few channels or units to remove a whole one; groups "
                f"{untouched[:8]}{' ...' if len(untouched) > 8 else ''})"]  # fmt: skip
    return []


def _correct(original: ir.Model, stats: dict | None, compensate: bool, refit: bool,
             sequential: Callable[[RemovalPlan], object] | None,
             removal: RemovalPlan) -> None:  # fmt: skip
    """The correct stage: attach compensation fills and refit weights computed for this
    plan's masks, then the sequential refit where asked (the oracle recomputes them all for
    its exact-groups plan)."""
    if compensate:
        removal.fills = compensation_fills(original, removal, stats)
    if refit:
        removal.weight_updates, refit_fills = refit_updates(original, removal, stats,
                                                            centered=compensate)  # fmt: skip
        removal.fills |= refit_fills
    if sequential is not None and (removal.masks or removal.blocks):
        sequential(removal)
    check_finite_corrections(removal)
