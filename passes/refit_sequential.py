"""Sequential refit: every linear consumer downstream of a removal is refit, in graph order, so
that from the inputs the pruned network gives it, it reproduces what it computed in the
original network (the error correction of layer-wise reconstruction, as in ZipLM and
SparseGPT's sequential mode, here on whole input channels).

A consumer ``y = x W`` (see :func:`~onnxprune.passes.compensate.weight_axes`: MatMul/Gemm with a
constant weight, Conv with ``group`` 1, any kernel) reads ``x_o`` in the original model and
``x_m`` in the masked model (removed channels zeroed or filled, earlier consumers already refit).
Over the calibration data, ``x_o ~ x_m B`` by ridge regression, ``B = (G_mm + r I)^-1 G_mo``
with ``G_mm = E[x_m x_mᵀ]`` and ``G_mo = E[x_m x_oᵀ]`` (channels at every position: convolution
is linear in each input channel, so ``B`` applies kernel position by kernel position), and
``W' = B W`` with the original ``W``: ``x_m W' ~ x_o W``. Rows of channels the consumer's own
masks remove keep their values (zeroed channels do not read them; a filled channel's constant
contribution is what compensation folded into the bias) and the kept rows are fit to the rest:
``W'_K = G_KK^-1 (G_Ko W - G_KR W_R)``.

Consumers are refit in stages: a stage holds every consumer with no unrefit consumer upstream,
so one pair of runs (original, masked) over the calibration data serves a whole stage. The
result is weight updates only: the oracle's masked model carries them, so verification stays
exact; the refit itself is judged by accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.passes.compensate import compensable, input_axis, weight_axes
from onnxprune.passes.refit import RIDGE
from onnxprune.plan import RemovalPlan
from onnxprune.sessions import with_outputs
from onnxprune.statistics import channel_rows
from onnxprune.verify import masked_model


def refit_stages(model: ir.Model, plan: RemovalPlan) -> list[list[str]]:
    """Names of the consumers to refit, in stages (see the module docstring): main-graph linear
    consumers with a float initializer weight read by no other node, on or downstream of a
    masked consumer or a dropped branch's sum."""
    graph = model.graph
    users: dict[str, int] = {}
    for node in graph:
        for value in node.inputs:
            if value is not None:
                users[value.name] = users.get(value.name, 0) + 1
    starts = {mask.consumer.node for mask in plan.masks} | {name for name, _ in
                                                             plan.blocks.values()}  # fmt: skip
    affected: set[str] = set()  # values downstream of a removal
    stage_of: dict[str, int] = {}  # value -> deepest refit stage upstream of it
    stages: list[list[str]] = []
    for node in graph:  # topological order
        inputs = [v for v in node.inputs if v is not None]
        hit = node.name in starts or any(v.name in affected for v in inputs)
        level = max((stage_of.get(v.name, 0) for v in inputs), default=0)
        if hit and _refittable(node, graph, users):
            if len(stages) <= level:
                stages.append([])
            stages[level].append(node.name)
            level += 1
        for value in node.outputs:
            if hit:
                affected.add(value.name)
            stage_of[value.name] = level
    return stages


def _refittable(node: ir.Node, graph: ir.Graph, users: dict[str, int]) -> bool:
    if weight_axes(node) is None or input_axis(node) is None:
        return False
    x, w = node.inputs[0], node.inputs[1]
    return (w.name in graph.initializers and users.get(w.name) == 1
            and w.dtype is not None and w.dtype.is_floating_point()
            and x.dtype is not None and x.dtype.is_floating_point())  # fmt: skip


_NONE = np.zeros(0, dtype=np.int64)


def _removed_inputs(model: ir.Model, plan: RemovalPlan) -> dict[str, np.ndarray]:
    """Consumer -> the input channels its masks remove (masks on the data input's channel
    axis; a mask on another axis only zeroes rows of the data, which the fit sees)."""
    nodes = {node.name: node for node in model.graph}
    out: dict[str, np.ndarray] = {}
    for mask in plan.masks:
        node = nodes.get(mask.consumer.node)
        if node is None or not compensable(node, mask, fold_bias=False):
            continue
        out[node.name] = np.union1d(out.get(node.name, []), mask.removed)
    return {k: v.astype(np.int64) for k, v in out.items()}


def _solve(
    node: ir.Node, g_mm: np.ndarray, g_mo: np.ndarray, removed: np.ndarray, ridge: float
) -> np.ndarray:
    """``W'`` in the weight's shape: kept rows ``G_KK^-1 (G_Ko W - G_KR W_R)``, removed rows
    as they were (a filled channel keeps the contribution compensation folded in)."""
    w = node.inputs[1].const_value.numpy()
    in_axis, out_axis = weight_axes(node)
    moved = np.moveaxis(w.astype(np.float64), (in_axis, out_axis), (0, 1))
    kept = np.setdiff1d(np.arange(len(g_mm)), removed)
    g_kk = g_mm[np.ix_(kept, kept)]
    scale = max(float(np.trace(g_kk)) / max(kept.size, 1), 1e-12)
    rhs = np.tensordot(g_mo[kept], moved, axes=(1, 0))
    if removed.size:
        rhs -= np.tensordot(g_mm[np.ix_(kept, removed)], moved[removed], axes=(1, 0))
    shape = rhs.shape
    solved = np.linalg.solve(g_kk + ridge * scale * np.eye(kept.size), rhs.reshape(kept.size, -1))
    new = moved.copy()
    new[kept] = solved.reshape(shape)
    return np.moveaxis(new, (0, 1), (in_axis, out_axis)).astype(w.dtype)


def _runner(model: ir.Model, names: list[str], options: dict
            ) -> Callable[[dict], dict[str, np.ndarray]]:  # fmt: skip
    """A function of a feed giving the values ``names`` of ``model`` (graph inputs from the
    feed itself, the others as extra outputs of one session)."""
    inputs = {v.name for v in model.graph.inputs}
    wanted = sorted(set(names) - inputs)
    session = with_outputs(model, wanted, **options)

    def run(feed: dict) -> dict[str, np.ndarray]:
        out = dict(zip(wanted, session.run(wanted, feed), strict=True)) if wanted else {}
        return out | {n: feed[n] for n in set(names) & inputs}

    return run


def sequential_refit(
    original: ir.Model,
    plan: RemovalPlan,
    batches: Callable[[], Iterable[dict]],
    *,
    providers: Sequence[str] | None = None,
    ridge: float = RIDGE,
    mask: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Set ``plan.weight_updates`` of every consumer in :func:`refit_stages` to its sequential
    refit (in place); returns how many weights were refit. ``mask``: as in
    :func:`~onnxprune.statistics.collect_statistics`."""
    stages = refit_stages(original, plan)
    removed = _removed_inputs(original, plan)
    nodes = {node.name: node for node in original.graph}
    done = 0
    for number, stage in enumerate(stages):
        masked = masked_model(original, plan)
        masked_nodes = {node.name: node for node in masked.graph}
        o_names = [nodes[name].inputs[0].name for name in stage]
        m_names = [masked_nodes[name].inputs[0].name for name in stage]
        options = {"optimization": "basic", "threads": 0, "providers": providers}
        o_run, m_run = _runner(original, o_names, options), _runner(masked, m_names, options)
        sums: dict[str, list[np.ndarray]] = {}
        for feed in batches():
            o_out, m_out = o_run(feed), m_run(feed)
            valid = None if mask is None else feed[mask]
            for name, o_name, m_name in zip(stage, o_names, m_names, strict=True):
                axis = input_axis(nodes[name])
                x_o = channel_rows(o_out[o_name], axis, valid)
                x_m = channel_rows(m_out[m_name], axis, valid)
                if name not in sums:
                    sums[name] = [np.zeros((len(x_m), len(x_m))), np.zeros((len(x_m), len(x_o)))]
                sums[name][0] += x_m @ x_m.T
                sums[name][1] += x_m @ x_o.T
        for name in stage:
            if name in sums:
                plan.weight_updates[nodes[name].inputs[1].name] = _solve(
                    nodes[name], *sums[name], removed.get(name, _NONE), ridge)
                done += 1
        if progress is not None:
            progress(number + 1, len(stages))
    return done
