"""The rewrite stage: a removal plan applied to a copy of the model.

Order: refit weights (``plan.weight_updates``) replace their initializers; ``ShrinkPass``
slices every planned tensor (memory-mapped weights lazily) and rewrites the sizes that depend
on them; ``CompensatePass`` folds the plan's fills into the consumers' biases (against the
consumers' full-size weights, refit values where the plan has them); ``RemoveBlocksPass``
drops the plan's residual branches (their sums pass the shortcut); ``CleanupPass`` removes
what no longer feeds an output, clears intermediate shapes and runs ``onnx.checker`` (skipped with
``check=False`` for the candidates a target search only measures). With ``keep_shapes`` (and
no check) the intermediate shapes stay, for ``metrics.rewritten_cost`` to count from.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.graph_values import analysed_nodes
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.compensate import CompensatePass
from onnxprune.passes.refit import apply_weight_updates
from onnxprune.passes.remove_blocks import RemoveBlocksPass
from onnxprune.passes.shrink import ShrinkPass
from onnxprune.plan import RemovalPlan


def rewrite(original: ir.Model, plan: RemovalPlan, *, check: bool = True,
            keep_shapes: bool = False) -> ir.Model:  # fmt: skip
    """A pruned copy of ``original`` (left unchanged) for ``plan``."""
    if check and keep_shapes:
        raise ValueError("keep_shapes is for unchecked candidates: the checker infers shapes "
                         "on a skeleton without them")  # fmt: skip
    model = original.clone()
    apply_weight_updates(model, plan.weight_updates)
    ShrinkPass(plan)(model)
    if plan.fills:
        nodes = {node.name: node for node in analysed_nodes(original.graph)}
        weights = {}
        for index in plan.fills:
            w = nodes[plan.masks[index].consumer.node].inputs[1]
            weights[w.name] = plan.weight_updates.get(w.name, w.const_value.numpy())
        CompensatePass(plan, weights)(model)
    if plan.blocks:
        RemoveBlocksPass(list(plan.blocks.values()))(model)
    CleanupPass(check=check, keep_shapes=keep_shapes)(model)
    return model
