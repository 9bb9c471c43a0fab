"""The correctness oracle: pruned(x) must equal masked(x).

The masked model is built from the original by an independent, simple path: for every
consumer that contracts a removed channel, a ``Mul`` by a 0/1 mask is inserted on that
input; nothing is sliced. Both models run in onnxruntime on the same inputs and every output
must agree to float tolerance: ``|diff| <= ATOL * max(1, scale) + RTOL * scale``, ``scale``
the output's largest magnitude.

Rounding noise: some outputs move more than that tolerance under rounding alone (a softmax
over logits in the hundreds turns relative float error of 1e-6 into probability changes of
1e-4). An output beyond the tolerance still passes when its difference is within
``NOISE_FACTOR`` times the masked model's own rounding noise: the larger difference of its
plain run from (a) its run with onnxruntime's graph optimisations, whose fusions reorder the
same float arithmetic, and (b) a run with every float weight moved by one unit in the last
place, up or down at random. A wrong rewrite moves outputs by their own scale, far beyond.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.errors import UnsupportedModelError
from onnxprune.model_io import runtime_bytes
from onnxprune.plan import RemovalPlan

RTOL = 1e-4
ATOL = 1e-5
NOISE_FACTOR = 4.0


@dataclass
class Verification:
    """Output-by-output comparison of two models on the same inputs."""

    passed: bool
    max_abs_diff: float
    max_rel_diff: float
    outputs: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    note: str = ""
    min_cosine: float = 1.0
    failed: list[str] = field(default_factory=list)  # outputs beyond the tolerance

    def to_dict(self) -> dict:
        return {
            "failed": self.failed,
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "outputs": self.outputs,
            "samples": self.samples,
            "note": self.note,
            "min_cosine": self.min_cosine,
        }


def masked_model(original: ir.Model, plan: RemovalPlan) -> ir.Model:
    """A copy of ``original`` with the plan's removed channels zeroed at their consumers, or,
    for mask ``i`` in ``plan.fills``, set to the constants ``plan.fills[i]`` (bias
    compensation); initializers in ``plan.weight_updates`` carry their refit values."""
    fills = plan.fills
    model = original.clone()
    for name, array in plan.weight_updates.items():  # refit weights, as in the pruned model
        model.graph.initializers[name].const_value = ir.Tensor(np.ascontiguousarray(array),
                                                               name=name)  # fmt: skip
    nodes = {node.name: node for node in model.graph}
    for i, mask in enumerate(plan.masks):
        node = nodes[mask.consumer.node]
        x = node.inputs[mask.consumer.input_index]
        rank = len(x.shape)
        shape = [1] * rank
        shape[mask.consumer.axis] = mask.size
        values = np.ones(mask.size, dtype=x.dtype.numpy())
        values[mask.removed] = 0
        name = f"onnxprune_mask_{i}"
        mask_value = ir.Value(name=name, shape=ir.Shape(shape), type=x.type)
        mask_value.const_value = ir.Tensor(values.reshape(shape), name=name)
        model.graph.register_initializer(mask_value)
        mul = ir.Node("", "Mul", [x, mask_value], name=f"{name}_mul", num_outputs=1)
        mul.outputs[0].name = f"{name}_out"
        mul.outputs[0].shape = x.shape
        mul.outputs[0].type = x.type
        model.graph.insert_before(node, mul)
        masked = mul.outputs[0]
        if i in fills:
            constant = np.zeros(mask.size, dtype=values.dtype)
            constant[mask.removed] = fills[i]
            fill_value = ir.Value(name=f"{name}_fill", shape=ir.Shape(shape), type=x.type)
            fill_value.const_value = ir.Tensor(constant.reshape(shape), name=f"{name}_fill")
            model.graph.register_initializer(fill_value)
            add = ir.Node("", "Add", [masked, fill_value], name=f"{name}_fill_add", num_outputs=1)
            add.outputs[0].name = f"{name}_filled"
            add.outputs[0].shape, add.outputs[0].type = x.shape, x.type
            model.graph.insert_before(node, add)
            masked = add.outputs[0]
        node.replace_input_with(mask.consumer.input_index, masked)
    return model


def session(model: ir.Model | onnx.ModelProto | bytes | str, threads: int = 2,
            optimized: bool = False):  # fmt: skip
    """An onnxruntime CPU session, by default without graph rewrites (so both sides run the
    same ops)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # fmt: skip
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(runtime_bytes(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for unsupported ops
        raise UnsupportedModelError(
            f"onnxruntime cannot run the model, so it cannot be verified ({exc}); "
            "install the custom-op library, or prune with --no-verify (the result is then "
            "unverified)"
        ) from exc


def compare(
    reference: ir.Model | onnx.ModelProto | str,
    candidate: ir.Model | onnx.ModelProto | str,
    feeds: list[Mapping[str, np.ndarray]],
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> Verification:
    """Run both models on every feed; pass when all outputs are close (scaled by magnitude)."""
    ref, cand = session(reference), session(candidate)
    names = [o.name for o in ref.get_outputs()]
    worst_abs = worst_rel = 0.0
    min_cosine = 1.0
    per_output: dict[str, float] = {n: 0.0 for n in names}
    failed: list[str] = []
    for feed in feeds:
        expected = ref.run(names, dict(feed))
        actual = cand.run(names, dict(feed))
        for name, e, a in zip(names, expected, actual, strict=True):
            if e.shape != a.shape:
                return Verification(False, float("inf"), float("inf"), per_output, len(feeds),
                                    f"output '{name}' has shape {a.shape}, expected {e.shape}")
            if e.dtype.kind not in "fc":
                ok = np.array_equal(e, a)
                diff = 0.0 if ok else float("inf")
            else:
                diff = float(np.max(np.abs(e - a))) if e.size else 0.0
                scale = float(np.max(np.abs(e))) if e.size else 0.0
                ok = diff <= atol * max(1.0, scale) + rtol * scale
                worst_rel = max(worst_rel, diff / scale if scale > 0 else diff)
                min_cosine = min(min_cosine, _cosine(e, a))
            if not ok and name not in failed:
                failed.append(name)
            worst_abs = max(worst_abs, diff)
            per_output[name] = max(per_output[name], diff)
    return Verification(not failed, worst_abs, worst_rel, per_output, len(feeds), "", min_cosine,
                        failed)  # fmt: skip


def rounding_noise(
    model: ir.Model | onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]]
) -> dict[str, float] | None:
    """Per float output, the largest difference between ``model``'s plain run and its run
    with graph optimisations or with every float weight one ulp off (see the module
    docstring); None where those sessions cannot be built."""
    try:
        others = [session(model, optimized=True), session(_ulp_perturbed(model))]
    except UnsupportedModelError:
        return None
    plain = session(model)
    names = [o.name for o in plain.get_outputs()]
    noise = dict.fromkeys(names, 0.0)
    for feed in feeds:
        expected = plain.run(names, dict(feed))
        for other in others:
            for name, a, b in zip(names, expected, other.run(names, dict(feed)), strict=True):
                if a.dtype.kind in "fc" and a.shape == b.shape and a.size:
                    noise[name] = max(noise[name], float(np.max(np.abs(a - b))))
    return noise


def _ulp_perturbed(model: ir.Model | onnx.ModelProto, seed: int = 0) -> ir.Model:
    """A copy whose float16/32/64 initializers each move one ulp up or down at random."""
    copy = model.clone() if isinstance(model, ir.Model) else ir.from_proto(model)
    rng = np.random.default_rng(seed)
    for name, value in copy.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or tensor.dtype not in _IEEE_FLOATS:
            continue
        array = tensor.numpy()
        up = rng.random(array.shape) < 0.5
        moved = np.where(up, np.nextafter(array, np.inf), np.nextafter(array, -np.inf))
        value.const_value = ir.Tensor(moved.astype(array.dtype), name=name)
    return copy


_IEEE_FLOATS = {ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


def verify_plan(
    original: ir.Model,
    pruned: ir.Model,
    plan: RemovalPlan,
    feeds: list[Mapping[str, np.ndarray]],
) -> Verification:
    """The oracle: compare the pruned model against the masked (and filled) original."""
    return against_masked(masked_model(original, plan), pruned, feeds)


def against_masked(
    masked: ir.Model | onnx.ModelProto, pruned: ir.Model, feeds: list[Mapping[str, np.ndarray]]
) -> Verification:
    """``compare``, where outputs beyond the tolerance pass within ``NOISE_FACTOR`` times the
    masked model's rounding noise."""
    result = compare(masked, pruned, feeds)
    if result.passed or not all(np.isfinite(result.outputs[n]) for n in result.failed):
        return result
    noise = rounding_noise(masked, feeds)
    if noise and all(result.outputs[n] <= NOISE_FACTOR * noise[n] for n in result.failed):
        result.passed = True
        result.note = ("beyond the float tolerance but within the model's own rounding noise: "
                       + ", ".join(f"'{n}' differs by {result.outputs[n]:.2g}, its optimised "
                                   f"and plain runs by {noise[n]:.2g}" for n in result.failed))
        result.failed = []
    return result
