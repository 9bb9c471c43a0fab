"""Block importance: how much the model depends on each removable residual branch (lower
scores go first).

Criteria:

- ``output`` (calibration data; the default with data): the relative squared change of the
  model's float outputs, ``sum_o |o' - o|^2 / |o|^2``, when that branch alone is zeroed, mean
  over the feeds (FinerCut's measure). One gated model (each branch multiplied by a scalar
  gate input, 1 = kept), one session, one run per block and feed. ``iterative``: blocks are
  chosen one at a time, the rest re-scored each time with the chosen gates at zero.
- ``influence`` (calibration data): ``1 - cos(s, s + f(x))`` between the sum's kept operand and
  its output, per sample over all its other axes, mean over samples (ShortGPT's block
  influence: a block that barely turns its stream is cheap to drop).
- ``weight`` (no data): a weight-norm proxy, the log of the product of the branch weights'
  gains ``|W|_F / sqrt(largest axis)`` (a chain of matrices scales its input by about that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.blocks import Block
from onnxprune.errors import UsageError
from onnxprune.sessions import open_session, with_outputs
from onnxprune.verify import zero_branch
from onnxprune.weights import reading

CRITERIA = ("output", "influence", "weight")
DATA_CRITERIA = ("output", "influence")
#: At most this many calibration feeds are run per block.
MAX_FEEDS = 8

Feed = dict[str, np.ndarray]


def output_change(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """``sum_o |o' - o|^2 / |o|^2`` over the float outputs (a changed shape counts as 1)."""
    total = 0.0
    for e, a in zip(reference, outputs, strict=True):
        e, a = np.asarray(e), np.asarray(a)
        if e.dtype.kind not in "fc":
            continue
        if e.shape != a.shape:
            total += 1.0
            continue
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        total += float(np.sum((a64 - e64) ** 2) / max(np.sum(e64**2), 1e-30))
    return total


def gated_model(model: ir.Model, blocks: Sequence[Block]) -> tuple[ir.Model, dict[int, str]]:
    """A copy of ``model`` whose branches are multiplied by scalar gate inputs (block id ->
    input name); a gate of 1 is the original model, 0 drops the branch."""
    gated = model.clone()
    nodes = {node.name: node for node in gated.graph}
    gates = {}
    for block in blocks:
        node = nodes[block.add]
        y = node.inputs[1 - block.skip_index]
        gate = ir.Value(name=f"onnxprune_gate_{block.id}", shape=ir.Shape([]), type=y.type)
        gated.graph.inputs.append(gate)
        zero_branch(gated, node, 1 - block.skip_index, f"onnxprune_gate_{block.id}", gate)
        gates[block.id] = gate.name
    return gated, gates


def _gate_feed(gated: ir.Model, gates: dict[int, str], off: set[int]) -> Feed:
    types = {v.name: v.dtype.numpy() for v in gated.graph.inputs}
    return {name: np.array(0 if k in off else 1, dtype=types[name]) for k, name in gates.items()}


def output_scores(model: ir.Model, blocks: Sequence[Block], feeds: Sequence[Feed], *,
                  iterative: int = 0, providers: Sequence[str] | None = None,
                  step: Callable[[int, int], None] | None = None,
                  ) -> tuple[dict[int, float], list[int]]:  # fmt: skip
    """(score per block, removal order): each block's output change alone; with
    ``iterative`` = k, the first k of the order are chosen greedily, each re-scored with the
    earlier choices dropped (the rest follow by their first scores)."""
    gated, gates = gated_model(model, blocks)
    session = open_session(gated, providers=providers)
    names = [o.name for o in session.get_outputs()]
    feeds = list(feeds)[:MAX_FEEDS]
    base = [session.run(names, {**f, **_gate_feed(gated, gates, set())}) for f in feeds]

    def change(off: set[int]) -> float:
        runs = [session.run(names, {**f, **_gate_feed(gated, gates, off)}) for f in feeds]
        return float(np.mean([output_change(b, r) for b, r in zip(base, runs, strict=True)]))

    ids = [b.id for b in blocks]
    rounds = min(iterative, len(ids)) if iterative else 1
    total = len(ids) * rounds - rounds * (rounds - 1) // 2
    scores: dict[int, float] = {}
    order: list[int] = []
    for r in range(rounds):
        current = {}
        for k in ids:
            if k not in order:
                current[k] = change({*order, k})
                if step is not None:
                    step(sum(len(ids) - i for i in range(r)) + len(current), total)
        if r == 0:
            scores = dict(current)
        if iterative:
            order.append(min(current, key=current.get))
    order += sorted((k for k in ids if k not in order), key=scores.get)
    return scores, order


def influence_scores(model: ir.Model, blocks: Sequence[Block], feeds: Sequence[Feed],
                     providers: Sequence[str] | None = None) -> dict[int, float]:  # fmt: skip
    """1 - cosine between each sum's kept operand and its output, mean over samples."""
    nodes = {node.name: node for node in model.graph}
    pairs = {b.id: (nodes[b.add].inputs[b.skip_index].name, nodes[b.add].outputs[0].name)
             for b in blocks}  # fmt: skip
    inputs = {v.name for v in model.graph.inputs}
    names = sorted({n for pair in pairs.values() for n in pair} - inputs)
    session = with_outputs(model, names, providers=providers)
    sums = dict.fromkeys(pairs, 0.0)
    count = 0
    for feed in list(feeds)[:MAX_FEEDS]:
        values = dict(zip(names, session.run(names, feed), strict=True)) | {
            k: v for k, v in feed.items() if k in inputs}
        for k, (s, out) in pairs.items():
            a = np.asarray(values[s], dtype=np.float64).reshape(len(values[s]), -1)
            b = np.asarray(values[out], dtype=np.float64).reshape(len(values[out]), -1)
            cos = np.sum(a * b, axis=1) / np.maximum(
                np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            sums[k] += float(np.sum(1.0 - cos))
        count += len(next(iter(values.values()))) if values else 0
    return {k: v / max(count, 1) for k, v in sums.items()}


def weight_scores(model: ir.Model, blocks: Sequence[Block]) -> dict[int, float]:
    """log of the product of the branch weights' gains |W|_F / sqrt(largest axis)."""
    values = model.graph.initializers
    scores = {}
    for block in blocks:
        total = 0.0
        for name in block.weights:
            tensor = values[name].const_value
            with reading(tensor) as array:
                norm = float(np.linalg.norm(np.asarray(array, dtype=np.float64).ravel()))
            total += np.log(max(norm, 1e-30) / np.sqrt(max(tensor.shape)))
        scores[block.id] = total
    return scores


def rank_blocks(model: ir.Model, blocks: Sequence[Block], criterion: str,
                feeds: Sequence[Feed], *, iterative: int = 0,
                providers: Sequence[str] | None = None,
                step: Callable[[int, int], None] | None = None,
                ) -> tuple[dict[int, float], list[int]]:  # fmt: skip
    """(score per block, removal order: least important first)."""
    if criterion not in CRITERIA:
        raise UsageError(f"block criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    if criterion in DATA_CRITERIA and not feeds:
        raise UsageError(f"block criterion '{criterion}' needs calibration data")
    if not blocks:
        return {}, []
    if criterion == "output":
        return output_scores(model, blocks, feeds, iterative=iterative, providers=providers,
                             step=step)  # fmt: skip
    if iterative:
        raise UsageError("iterative block removal re-scores by the output change: use the "
                         "'output' block criterion")  # fmt: skip
    scores = (influence_scores(model, blocks, feeds, providers) if criterion == "influence"
              else weight_scores(model, blocks))  # fmt: skip
    return scores, sorted(scores, key=scores.get)
