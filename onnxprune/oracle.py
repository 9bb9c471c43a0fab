"""The verify stage: the pruned model against the oracle of DESIGN.md.

Rules: the exact groups' rewrite must equal the masked original (``verify.verify_plan``: the
outputs, every shrunk activation and every sliced weight); approximate groups, when pruned,
are judged by the written model's cosine to the masked original; and the normalised working
copy must equal the model as the user gave it. A model past the inline limit is first staged
(written once, one tensor at a time, to a temporary file its sessions then read in place);
the staged copy is what gets verified and later moved into place. Failures raise
``VerificationError`` and remove the staged copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxprune.errors import UnsupportedModelError, VerificationError
from onnxprune.groups import Group
from onnxprune.input_sizes import shapes_text
from onnxprune.model_io import ModelSource, load_model
from onnxprune.plan import RemovalPlan
from onnxprune.rewrite import rewrite
from onnxprune.sessions import FileModel, Probe, Staged, is_large, staged
from onnxprune.verify import Verification, compare, masked_model, similarity, verify_plan

Verdicts = tuple[Verification, Verification | None]


def verify_pruned(model: ModelSource, base_dir: str | Path | None, original: ir.Model,
                  pruned: ir.Model, plan: RemovalPlan, groups: list[Group], feeds: list,
                  correct: Callable[[RemovalPlan], None], min_cosine: float,
                  step: Callable[[str, int], None] | None = None, known: Probe | None = None,
                  ) -> tuple[ir.Model, Staged | None, Verdicts]:  # fmt: skip
    """(the verified model, its staging or None, (oracle verdict, approximate verdict)).
    ``known``: runs of the working copy already made (the input-size probe's).

    Raises:
        VerificationError: the pruned model fails the oracle.
        UnsupportedModelError: onnxruntime cannot run the model.
    """
    staging = None
    if is_large(pruned):  # its weights go to a file before sessions read them
        if step is not None:
            step("stage", 0)
        staging = staged(pruned)
        pruned = staging.model
        if step is not None:
            step("stage", 1)
    try:
        verdicts = _verified(_as_loaded(model, base_dir), original, pruned, plan, groups, feeds,
                             correct, min_cosine, known)  # fmt: skip
    except BaseException:
        if staging is not None:
            staging.remove()
        raise
    return pruned, staging, verdicts


def _verified(source: ir.Model | onnx.ModelProto | str, original: ir.Model, pruned: ir.Model,
              plan: RemovalPlan, groups: list[Group], feeds: list,
              correct: Callable[[RemovalPlan], None], min_cosine: float,
              known: Probe | None) -> tuple[Verification, Verification | None]:  # fmt: skip
    """The oracle's verdicts; raises VerificationError when the pruned model fails it."""
    try:
        verification, similarity_check = _oracle(source, original, pruned, plan, groups, feeds,
                                                 correct, min_cosine, known)  # fmt: skip
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
            correct: Callable[[RemovalPlan], None], min_cosine: float,
            known: Probe | None = None) -> tuple[Verification, Verification | None]:  # fmt: skip
    """The oracle on ``feeds``: pruned == masked original for the exact groups (approximate
    groups, when pruned, by cosine of the written model to the masked original), and the
    normalised working copy == the model as the user gave it (the working copy's outputs
    taken from ``known`` where it already ran on a feed)."""
    approximate_ids = {g.id for g in groups if g.approximate}
    similarity_check = None
    if approximate_ids & set(plan.removed):
        exact_plan = RemovalPlan.build(
            groups, {k: v for k, v in plan.removed.items() if k not in approximate_ids}
        )
        correct(exact_plan)
        verification = verify_plan(original, rewrite(original, exact_plan), exact_plan, feeds)
        verification.add_note("oracle run on the exact groups (the model written has the "
                              "approximate groups pruned too)")  # fmt: skip
        similarity_check = similarity(masked_model(original, plan), pruned, feeds, min_cosine)
    else:
        verification = verify_plan(original, pruned, plan, feeds)
    reference = compare(source, original, feeds, known=known)
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
    if isinstance(model, onnx.ModelProto | ir.Model | FileModel):
        return model
    return str(model)
