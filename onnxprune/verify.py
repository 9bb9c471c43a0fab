"""The correctness oracle: pruned(x) must equal masked(x), element by element.

The masked model is built from the original by an independent, simple path: for every
consumer that contracts a removed channel, a ``Mul`` by a 0/1 mask is inserted on that
input; nothing is sliced. Both models run in onnxruntime on the same inputs.

Rules, per output and per input (``compare``):

- Integer and bool outputs are equal; 8-bit integer outputs (quantized tensors) may differ by
  one quantization step per element.
- Non-finite values must sit at the same positions with the same values in both; the
  difference is taken over the finite ones, and an output with none is not checkable (fails).
  A shape mismatch fails. No inputs at all fail.
- Float outputs: every element ``|a - e| <= ATOL + SCALE_TOL * rms(e) + RTOL * |e|`` (the
  constants depend on the dtype, ``TOLERANCES``). ``rms`` rather than the largest value: one
  large element (a pixel box next to class scores) must not license differences elsewhere.
  The relative L2 error and cosine are reported for every output.
- Rounding noise (``against_masked``): an element beyond that tolerance still passes when its
  difference is within ``NOISE_FACTOR`` times the masked model's own rounding noise there,
  measured as how far that element moves when every finite float weight of rank >= 2 (the
  contraction weights, never scalar constants such as a mask's ``finfo.min`` or a quantization
  scale) moves one ulp, or when onnxruntime's optimisations reorder the arithmetic. The noise
  of an element counts at least the output's mean noise (one quiet element is not a proof)
  and at most ``NOISE_CAP`` of the output's largest magnitude; the output must also keep its
  relative L2 error under the dtype's ``rel_l2_floor``. The note says which outputs passed
  by this rule.

Beyond the outputs (``verify_plan``), because an output cannot show a channel that the test
inputs leave dead:

- every activation the rewrite shrank equals the masked model's at the kept positions,
  channel by channel (``report_activations``: each channel within ``CHANNEL_TOL`` of its norm,
  or of the mean channel norm where that is larger);
- every float weight shared by name with the original equals the original (or its refit
  value) taken at the kept positions, exactly (``check_weights``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.channel_graph import Dim
from onnxprune.errors import UsageError
from onnxprune.graph_values import analysed_graphs, analysed_nodes
from onnxprune.input_sizes import shapes_text
from onnxprune.plan import RemovalPlan
from onnxprune.quantization import QUANTIZED_INPUTS, QUANTIZED_TYPES
from onnxprune.sessions import Probe, open_session, with_outputs
from onnxprune.weights import derived, reading, weight_map

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    """Per-element ``|diff| <= atol + scale_tol * rms(expected) + rtol * |expected|``; the
    rounding-noise rule needs relative L2 error <= ``rel_l2_floor``."""

    rtol: float
    scale_tol: float
    atol: float
    rel_l2_floor: float


TOLERANCES = {
    np.dtype(np.float64): Tolerance(1e-9, 1e-9, 1e-12, 1e-7),
    np.dtype(np.float32): Tolerance(1e-4, 1e-4, 1e-5, 1e-3),
    np.dtype(np.float16): Tolerance(1e-2, 1e-2, 1e-3, 3e-2),
}
NOISE_FACTOR = 4.0
NOISE_CAP = 1e-3


@dataclass
class OutputCheck:
    """How one output compared over every input: worst figures, and the rule that decided."""

    max_abs_diff: float = 0.0
    rel_l2: float = 0.0
    cosine: float = 1.0
    passed: bool = True
    rule: str = "equal"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verification:
    """Output-by-output comparison of two models on the same inputs."""

    passed: bool
    max_abs_diff: float
    max_rel_diff: float  # worst relative L2 error of any output
    outputs: dict[str, float] = field(default_factory=dict)  # max |diff| per output
    samples: int = 0
    note: str = ""
    min_cosine: float = 1.0
    failed: list[str] = field(default_factory=list)  # outputs beyond every rule
    checks: dict[str, OutputCheck] = field(default_factory=dict)
    input_shapes: list[dict[str, list[int]]] = field(default_factory=list)  # one per size

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
            "checks": {k: v.to_dict() for k, v in self.checks.items()},
            "input_shapes": self.input_shapes,
        }

    def add_note(self, text: str) -> None:
        self.note = "; ".join(filter(None, [self.note, text]))


def masked_model(original: ir.Model, plan: RemovalPlan) -> ir.Model:
    """A copy of ``original`` with the plan's removed channels zeroed at their consumers (set
    to the zero point where the consumer reads a quantized integer input) and its dropped
    residual branches multiplied by zero at their sums, or,
    for mask ``i`` in ``plan.fills``, set to the constants ``plan.fills[i]`` (bias
    compensation); initializers in ``plan.weight_updates`` carry their refit values."""
    fills = plan.fills
    model = original.clone()
    for name, array in plan.weight_updates.items():  # refit weights, as in the pruned model
        model.graph.initializers[name].const_value = ir.Tensor(np.ascontiguousarray(array),
                                                               name=name)  # fmt: skip
    nodes = {node.name: node for node in analysed_nodes(model.graph)}
    for i, mask in enumerate(plan.masks):
        node = nodes[mask.consumer.node]
        x = node.inputs[mask.consumer.input_index]
        rank = len(x.shape)
        shape = [1] * rank
        shape[mask.consumer.axis] = mask.size
        values = np.ones(mask.size, dtype=x.dtype.numpy())
        values[mask.removed] = 0
        name = f"onnxprune_mask_{i}"
        zero_point = _zero_point(node, mask.consumer.input_index)
        if zero_point is not None:  # a quantized input: "nothing" is its zero point
            values = values.astype(bool)
        mask_value = ir.Value(name=name, shape=ir.Shape(shape),
                              type=ir.TensorType(ir.DataType.BOOL) if zero_point is not None
                              else x.type)  # fmt: skip
        mask_value.const_value = ir.Tensor(values.reshape(shape), name=name)
        model.graph.register_initializer(mask_value)
        mul = (ir.Node("", "Mul", [x, mask_value], name=f"{name}_mul", num_outputs=1)
               if zero_point is None else
               ir.Node("", "Where", [mask_value, x, zero_point], name=f"{name}_where",
                       num_outputs=1))  # fmt: skip
        mul.outputs[0].name = f"{name}_out"
        mul.outputs[0].shape = x.shape
        mul.outputs[0].type = x.type
        node.graph.insert_before(node, mul)
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
            node.graph.insert_before(node, add)
            masked = add.outputs[0]
        node.replace_input_with(mask.consumer.input_index, masked)
    for k, (name, skip_index) in plan.blocks.items():  # dropped branches: multiplied by zero
        zero_branch(model, nodes[name], 1 - skip_index, f"onnxprune_block_{k}")
    return model


def zero_branch(model: ir.Model, node: ir.Node, index: int, name: str,
                gate: ir.Value | None = None) -> None:  # fmt: skip
    """Input ``index`` of ``node`` multiplied by zero (or by the scalar ``gate``) before the
    node reads it: the oracle's independent form of a dropped residual branch."""
    y = node.inputs[index]
    if gate is None:
        gate = ir.Value(name=f"{name}_zero", shape=ir.Shape([]), type=y.type)
        gate.const_value = ir.Tensor(np.zeros((), dtype=y.dtype.numpy()), name=gate.name)
        model.graph.register_initializer(gate)
    mul = ir.Node("", "Mul", [y, gate], name=f"{name}_mul", num_outputs=1)
    mul.outputs[0].name = f"{name}_out"
    mul.outputs[0].shape, mul.outputs[0].type = y.shape, y.type
    node.graph.insert_before(node, mul)
    node.replace_input_with(index, mul.outputs[0])


ModelLike = ir.Model | onnx.ModelProto | str

def _zero_point(node: ir.Node, index: int) -> ir.Value | None:
    """The zero-point value of a quantized op's integer input ``index`` (a removed channel is
    masked to it, contributing nothing), else None (masked to 0)."""
    x = node.inputs[index]
    params = QUANTIZED_INPUTS.get(node.op_type, {}).get(index)
    position = None if params is None else params[1]
    if position is None or x is None or x.dtype is None or x.dtype.is_floating_point():
        return None
    zero = node.inputs[position] if position < len(node.inputs) else None
    return zero  # absent: the zero point is 0, and a 0/1 Mul masks to it


def _outputs(session: ort.InferenceSession) -> list[str]:
    return [o.name for o in session.get_outputs()]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


def _rel_l2(e: np.ndarray, a: np.ndarray) -> float:
    norm = float(np.linalg.norm(e))
    diff = float(np.linalg.norm(a - e))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))


def _tolerance(dtype: np.dtype) -> Tolerance:
    return TOLERANCES.get(np.dtype(dtype), TOLERANCES[np.dtype(np.float32)])


def _elementwise(e: np.ndarray, a: np.ndarray, tol: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """|a - e| and the per-element float tolerance, over finite float64 arrays."""
    rms = float(np.sqrt(np.mean(np.square(e)))) if e.size else 0.0
    return np.abs(a - e), tol.atol + tol.scale_tol * rms + tol.rtol * np.abs(e)


def _check_one(check: OutputCheck, e: np.ndarray, a: np.ndarray,
               noise: Callable[[], list[np.ndarray]] | None) -> None:  # fmt: skip
    """Fold one input's comparison of one output into ``check``."""
    if e.shape != a.shape:
        check.passed, check.rule = False, f"shape {a.shape}, expected {e.shape}"
        check.max_abs_diff = float("inf")
        return
    if e.dtype.kind not in "fc":
        step = 1 if e.dtype.itemsize == 1 and e.dtype.kind in "iu" else 0
        diff = float(np.max(np.abs(e.astype(np.int64) - a.astype(np.int64)))) if e.size else 0.0
        check.max_abs_diff = max(check.max_abs_diff, diff)
        if diff > step:
            check.passed, check.rule = False, "integer values differ"
        elif step and check.passed:
            check.rule = "within one quantization step"
        return
    finite = np.isfinite(e)
    if not np.array_equal(finite, np.isfinite(a)) or not np.array_equal(
        e[~finite], a[~finite], equal_nan=True
    ):
        check.passed, check.rule = False, "non-finite values differ"
        check.max_abs_diff = float("nan")
        return
    if e.size and not finite.any():
        check.passed, check.rule = False, "no finite values to compare"
        return
    e64, a64 = e[finite].astype(np.float64), a[finite].astype(np.float64)
    tol = _tolerance(e.dtype)
    diff, allowed = _elementwise(e64, a64, tol)
    worst = float(diff.max()) if diff.size else 0.0
    rel = _rel_l2(e64, a64)
    check.max_abs_diff = max(check.max_abs_diff, worst)
    check.rel_l2 = max(check.rel_l2, rel)
    check.cosine = min(check.cosine, _cosine(e64, a64))
    if not check.passed or np.all(diff <= allowed):
        if check.passed and worst > 0 and check.rule == "equal":
            check.rule = "float tolerance"
        return
    measured = noise() if noise is not None and rel <= tol.rel_l2_floor else None
    runs = [r for r in measured or [] if r.shape == e.shape]
    if runs:
        n = np.max([np.abs(r.astype(np.float64) - e.astype(np.float64))[finite] for r in runs], 0)
        n = np.nan_to_num(n, nan=0.0, posinf=0.0)
        cap = NOISE_CAP * float(np.abs(e64).max())
        allowance = np.minimum(NOISE_FACTOR * np.maximum(n, n.mean()), cap)
        if np.all(diff <= allowed + allowance):
            check.rule = "rounding noise"
            return
    check.passed = False
    check.rule = (f"beyond the float tolerance (rel. L2 {rel:.2g}"
                  + (", and beyond the rounding-noise allowance)" if runs else ")"))


def compare(
    reference: ModelLike,
    candidate: ModelLike,
    feeds: Sequence[Feed],
    *,
    noise_from: ModelLike | None = None,
    known: Probe | None = None,
) -> Verification:
    """Run both models on every feed and check every output by the module's rules (outputs
    matched by position). ``noise_from``: the model whose rounding noise may excuse a float
    difference (the reference itself in the oracle); ``known``: runs of the candidate already
    made, used where they cover every feed (no session of the candidate then)."""
    return _compare(reference, candidate, feeds, noise_from=noise_from, known=known)[0]


def _compare(reference: ModelLike, candidate: ModelLike, feeds: Sequence[Feed], *,
             noise_from: ModelLike | None = None, watch: Sequence[str] = (),
             on_watched: Callable[[list, list], None] | None = None,
             known: Probe | None = None) -> tuple[Verification, bool]:  # fmt: skip
    """``compare``, and whether ``on_watched`` was given, feed by feed, the reference's and
    the candidate's values of the intermediate tensors ``watch`` (returned by the same
    sessions as extra outputs; not where a model cannot return them or the candidate fails to
    run). One session at a time: a large model's mapped weights are resident once; the
    reference's watched values of every feed are held until the candidate's run of it."""
    feeds = list(feeds)
    if not feeds:
        return Verification(False, float("nan"), float("nan"), note="no inputs to compare on"), False
    ref, names, watched = _session(reference, watch)
    expected, ref_values = [], []
    for feed in feeds:
        run = _run(ref, names + watched, feed, "the reference model")
        expected.append(run[:len(names)])
        ref_values.append(run[len(names):])
    del ref
    if known is not None and not watched and all(known.outputs_of(f) is not None
                                                 for f in feeds):  # fmt: skip
        cand, cand_names, cand_watched = _Known(known), known.names, []
    else:
        cand, cand_names, cand_watched = _session(candidate, watched)
    if len(names) != len(cand_names):
        return Verification(False, float("inf"), float("inf"), samples=len(feeds),
                            note=f"the models have {len(names)} and {len(cand_names)} outputs",
                            failed=names), False  # fmt: skip
    watching = bool(watched) and cand_watched == watched and on_watched is not None
    actual = []
    for i, feed in enumerate(feeds):
        try:
            run = cand.run(cand_names + cand_watched, dict(feed))
        except Exception as exc:  # onnxruntime's own types: the candidate is broken here
            first = (str(exc).strip().splitlines() or [""])[0]
            return Verification(False, float("inf"), float("inf"), samples=len(feeds),
                                note=f"the model checked fails to run at "
                                f"{_shapes_text(feed)}: {first}", failed=names), False  # fmt: skip
        actual.append(run[:len(cand_names)])
        if watching:
            on_watched(ref_values[i], run[len(cand_names):])
        ref_values[i] = None
    del cand
    checks = {name: OutputCheck() for name in names}
    noisy = _NoiseRuns(noise_from, feeds) if noise_from is not None else None
    dtypes: set = set()
    for i, (outs_e, outs_a) in enumerate(zip(expected, actual, strict=True)):
        dtypes |= {np.asarray(e).dtype for e in outs_e if np.asarray(e).dtype.kind in "fiu"}
        for k, (name, e, a) in enumerate(zip(names, outs_e, outs_a, strict=True)):
            noise = None if noisy is None else (lambda i=i, k=k: noisy.output(i, k))
            _check_one(checks[name], np.asarray(e), np.asarray(a), noise)
    failed = [n for n, c in checks.items() if not c.passed]
    by_noise = [n for n, c in checks.items() if c.passed and c.rule == "rounding noise"]
    result = Verification(
        passed=not failed,
        max_abs_diff=max((c.max_abs_diff for c in checks.values()), default=0.0,
                         key=lambda d: np.inf if np.isnan(d) else d),
        max_rel_diff=max((c.rel_l2 for c in checks.values()), default=0.0),
        outputs={n: c.max_abs_diff for n, c in checks.items()},
        samples=len(feeds),
        min_cosine=min((c.cosine for c in checks.values()), default=1.0),
        failed=failed,
        checks=checks,
        input_shapes=_distinct_shapes(feeds),
    )  # fmt: skip
    if by_noise:
        result.add_note("within the masked model's own rounding noise (beyond the plain float "
                        "tolerance): " + ", ".join(
                            f"'{n}' (max |diff| {checks[n].max_abs_diff:.2g}, rel. L2 "
                            f"{checks[n].rel_l2:.2g})" for n in by_noise))  # fmt: skip
    for name in failed:
        result.add_note(f"'{name}': {checks[name].rule}")
    if any(np.dtype(d).kind in "iu" and np.dtype(d).itemsize == 1 for d in dtypes):
        result.add_note("8-bit integer (quantized) outputs may differ by one quantization step "
                        "per element (a rounding flip)")  # fmt: skip
    loose = sorted({str(np.dtype(d)) for d in dtypes
                    if np.dtype(d).kind == "f" and np.dtype(d) != np.float32})  # fmt: skip
    for dtype in loose:
        tol = _tolerance(np.dtype(dtype))
        result.add_note(f"{dtype} outputs compared at rtol {tol.rtol:g}, scale tolerance "
                        f"{tol.scale_tol:g}, atol {tol.atol:g}")  # fmt: skip
    return result, watching


@dataclass
class _Known:
    """A stand-in for a candidate's session: its outputs (all, in order) on each feed it
    already ran on."""

    probe: Probe

    def run(self, names: list[str], feed: Feed) -> list[np.ndarray]:
        outputs = self.probe.outputs_of(feed)
        assert outputs is not None and names == self.probe.names
        return outputs


def _session(model: ModelLike, watch: Sequence[str]
             ) -> tuple[ort.InferenceSession, list[str], list[str]]:  # fmt: skip
    """An oracle session of ``model`` (no weight prepacking: it runs a few feeds), its own
    output names, and ``watch`` where it returns those too (an ``ir.Model`` that onnxruntime
    opens with them as extra outputs), else no watched names."""
    if watch and isinstance(model, ir.Model):
        try:
            session = with_outputs(model, watch, prepack=False)
        except Exception:  # noqa: BLE001 - onnxruntime's own types: opened without them below
            pass
        else:
            names = _outputs(session)
            return session, names[:len(names) - len(watch)], list(watch)
    session = open_session(model, prepack=False)
    return session, _outputs(session), []


def _shapes_text(feed: Feed) -> str:
    return shapes_text({k: np.shape(v) for k, v in feed.items()})


def _run(session: ort.InferenceSession, names: list[str], feed: Feed, what: str) -> list:
    try:
        return session.run(names, dict(feed))
    except Exception as exc:  # onnxruntime's own types
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"{what} does not run on the inputs at {_shapes_text(feed)} "
                         f"(onnxruntime: {first}); give sizes it runs at with --dim or real "
                         "inputs") from exc  # fmt: skip


class _NoiseRuns:
    """The rounding noise of one model: its output under a one-ulp perturbation of its
    contraction weights and under onnxruntime's optimisations, per element, as the run that
    moved furthest from the plain one. Computed on first use, for every feed, one session at
    a time."""

    def __init__(self, model: ModelLike, feeds: Sequence[Feed]) -> None:
        self.model = model
        self.feeds = feeds
        self.runs: list[list[list[np.ndarray]]] | None = None

    def output(self, feed_index: int, index: int) -> list[np.ndarray]:
        if self.runs is None:
            self.runs = []
            for make in (lambda: open_session(self.model, optimization="all"),
                         lambda: open_session(ulp_perturbed(self.model), prepack=False)):  # fmt: skip
                session = make()
                self.runs.append([session.run(None, dict(f)) for f in self.feeds])
                del session
        return [np.asarray(run[feed_index][index]) for run in self.runs]


def ulp_perturbed(model: ModelLike, seed: int = 0) -> ir.Model:
    """A copy whose finite float weights of rank >= 2 each move one ulp up or down at
    random (scalars and vectors, such as masks' ``finfo.min`` or quantization scales, stay);
    memory-mapped weights are perturbed when read."""
    if isinstance(model, ir.Model):
        copy = model.clone()
    else:
        copy = ir.from_proto(model if isinstance(model, onnx.ModelProto) else onnx.load(model))
    for i, (name, value) in enumerate(copy.graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or tensor.dtype not in _IEEE_FLOATS or len(tensor.shape) < 2:
            continue
        value.const_value = derived(tensor, functools.partial(_ulp_moved, seed=seed + i),
                                    tuple(tensor.shape.numpy()), name)  # fmt: skip
    return copy


def _ulp_moved(array: np.ndarray, seed: int) -> np.ndarray:
    up = np.random.default_rng(seed).random(array.shape) < 0.5
    moved = np.where(up, np.nextafter(array, np.inf), np.nextafter(array, -np.inf))
    return np.where(np.isfinite(moved), moved, array).astype(array.dtype)


_IEEE_FLOATS = {ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE}


def _distinct_shapes(feeds: Sequence[Feed]) -> list[dict[str, list[int]]]:
    shapes: list[dict[str, list[int]]] = []
    for feed in feeds:
        shape = {k: list(np.shape(v)) for k, v in feed.items()}
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def verify_plan(
    original: ir.Model,
    pruned: ir.Model,
    plan: RemovalPlan,
    feeds: Sequence[Feed],
) -> Verification:
    """The oracle: compare the pruned model against the masked (and filled) original, at
    the outputs and at every shrunk activation; and every sliced weight against the
    original's at the kept positions."""
    result = against_masked(masked_model(original, plan), pruned, feeds, plan.kept)
    check_weights(result, original, pruned, plan)
    return result


def _initializers(model: ir.Model) -> dict[str, ir.Value]:
    return {name: value for graph in analysed_graphs(model.graph)
            for name, value in graph.initializers.items()}  # fmt: skip


def check_weights(result: Verification, original: ir.Model, pruned: ir.Model,
                  plan: RemovalPlan) -> None:  # fmt: skip
    """Every float or quantized (8/4-bit integer) initializer the pruned model shares by name
    with the original, in the main graph and in If branches, equals the original's (refit
    values where the plan has them) taken at the kept positions of each shrunk axis, exactly.
    Inputs a dead channel leaves unread cannot show a misplaced weight column at the outputs;
    this shows it."""
    originals = _initializers(original)
    pairs = []
    for name, value in _initializers(pruned).items():
        before = originals.get(name)
        if before is None or value.const_value is None or before.const_value is None:
            continue
        if (before.const_value.dtype.is_floating_point()
                or before.const_value.dtype in QUANTIZED_TYPES):  # fmt: skip
            pairs.append((name, before.const_value, value.const_value))

    def matches(pair: tuple[str, ir.TensorProtocol, ir.TensorProtocol]) -> bool:
        name, before, after = pair
        full = plan.weight_updates.get(name)
        with reading(before) as source, reading(after) as actual:
            return _identical(plan.sliced(name, source if full is None else full), actual)

    bad = [pair[0] for pair, same in zip(pairs, weight_map(matches, pairs, original),
                                         strict=True) if not same]  # fmt: skip
    if bad:
        result.passed = False
        result.failed += [f"weight '{n}'" for n in bad]
        result.add_note(f"{len(bad)} weight(s) differ from the original at the kept positions: "
                        + ", ".join(f"'{n}'" for n in bad[:5]))  # fmt: skip


def _identical(expected: np.ndarray, actual: np.ndarray) -> bool:
    """The same shape and values: bit for bit where the types agree (one pass; NaN equals
    NaN of the same bits), else by value with NaN equal to NaN."""
    if expected.shape != actual.shape:
        return False
    if expected.dtype == actual.dtype and expected.dtype.itemsize in (1, 2, 4, 8):
        bits = np.dtype(f"u{expected.dtype.itemsize}")
        return bool(np.array_equal(expected.view(bits), actual.view(bits)))
    return bool(np.array_equal(expected, actual, equal_nan=True))


def against_masked(masked: ModelLike, pruned: ModelLike, feeds: Sequence[Feed],
                   kept: Mapping[Dim, np.ndarray] | None = None) -> Verification:  # fmt: skip
    """``compare`` where the masked model's own rounding noise may excuse a float difference
    (module docstring); with ``kept``, also every shrunk activation (``report_activations``),
    read by the same runs as extra outputs."""
    names = []
    if kept and isinstance(masked, ir.Model) and isinstance(pruned, ir.Model):
        names = shrunk_activations(masked, pruned, kept)
    checks = {name: OutputCheck() for name in names}
    result, watched = _compare(
        masked, pruned, feeds, noise_from=masked, watch=names,
        on_watched=lambda e, a: _check_activation_run(checks, names, [e, a], kept))
    if watched:
        report_activations(result, checks)
    return result


#: At most this many shrunk activations are read back per run (extra session outputs).
MAX_ACTIVATIONS = 256


def shrunk_activations(masked: ir.Model, pruned: ir.Model,
                       kept: Mapping[Dim, np.ndarray]) -> list[str]:  # fmt: skip
    """The activations the rewrite shrank that both models compute (not their outputs), at
    most ``MAX_ACTIVATIONS`` of them, evenly over the model, not its first layers only."""
    produced = {v.name for n in pruned.graph for v in n.outputs}
    produced &= {v.name for n in masked.graph for v in n.outputs}
    produced -= {v.name for v in (*masked.graph.outputs, *pruned.graph.outputs)}
    names = sorted({d.tensor for d in kept if d.tensor in produced})
    if len(names) > MAX_ACTIVATIONS:
        names = [names[i] for i in np.linspace(0, len(names) - 1, MAX_ACTIVATIONS).astype(int)]
    return names


def report_activations(result: Verification, checks: Mapping[str, OutputCheck]) -> None:
    """Every activation the rewrite shrank must equal the masked model's at the kept positions
    (``checks``, folded feed by feed by ``_check_activation_run``; same element-wise rule as
    the outputs, no noise allowance). This catches a wrong channel where the outputs cannot
    show it: a channel the test inputs leave dead behind a ReLU still differs before it.
    Failures are added to ``result`` as ``tensor 'name'``."""
    bad = [n for n, c in checks.items() if not c.passed]
    for name in bad:
        result.failed.append(f"tensor '{name}'")
        result.add_note(f"shrunk activation '{name}': {checks[name].rule}")
    if bad:
        result.passed = False
    result.add_note(f"{len(checks)} shrunk activations checked channel by channel at their "
                    f"kept positions" + (f", {len(bad)} differ" if bad else ""))


def _check_activation_run(checks: dict[str, OutputCheck], names: list[str], runs: list,
                          kept: Mapping[Dim, np.ndarray]) -> None:  # fmt: skip
    """Fold one feed's masked and pruned activations into ``checks``."""
    for name, e, a in zip(names, *runs, strict=True):
        e, a = np.asarray(e), np.asarray(a)
        shrunk = [axis for axis in range(e.ndim) if Dim(name, axis) in kept]
        for axis in shrunk:
            if e.shape[axis] > a.shape[axis]:
                e = np.take(e, kept[Dim(name, axis)], axis=axis)
        if e.shape == a.shape and e.dtype.kind in "fc" and shrunk:
            _check_channels(checks[name], e, a, shrunk[0])


#: A channel of a shrunk activation may differ by this much relative to its own norm, or to
#: the mean channel norm where it is smaller (float32; 30x that for float16).
CHANNEL_TOL = 1e-3


def _check_channels(check: OutputCheck, e: np.ndarray, a: np.ndarray, axis: int) -> None:
    """Fold one input's comparison of a shrunk activation into ``check``, channel by channel
    along ``axis``: rounding moves a channel by ~1e-6 of its norm, a misplaced channel by
    its whole norm. (Element by element, rounding in large activations exceeds the output
    tolerance where it cancels out at the outputs.)"""
    finite = np.isfinite(e)
    if not np.array_equal(finite, np.isfinite(a)):
        check.passed, check.rule = False, "non-finite values differ"
        return
    e64 = np.where(finite, e, 0).astype(np.float64)
    a64 = np.where(finite, a, 0).astype(np.float64)
    rows_e = np.moveaxis(e64, axis, 0).reshape(e64.shape[axis], -1)
    rows_d = np.moveaxis(a64 - e64, axis, 0).reshape(e64.shape[axis], -1)
    norms = np.linalg.norm(rows_e, axis=1)
    floor = max(float(np.sqrt(np.mean(np.square(norms)))), 1e-30)
    error = np.linalg.norm(rows_d, axis=1) / np.maximum(norms, floor)
    worst = float(error.max()) if error.size else 0.0
    check.max_abs_diff = max(check.max_abs_diff, float(np.abs(rows_d).max()) if rows_d.size
                             else 0.0)  # fmt: skip
    check.rel_l2 = max(check.rel_l2, worst)
    tol = CHANNEL_TOL * (30 if e.dtype == np.float16 else 1)
    if worst > tol:
        check.passed = False
        check.rule = (f"channel {int(error.argmax())} differs by {worst:.2g} of its norm "
                      f"(tolerance {tol:g})")  # fmt: skip
    elif check.passed:
        check.rule = "channels within tolerance"


def similarity(reference: ModelLike, candidate: ModelLike, feeds: Sequence[Feed],
               min_cosine: float) -> Verification:  # fmt: skip
    """For approximate pruning: passes when every float output's cosine to the reference is
    at least ``min_cosine`` on every feed (shapes and integer outputs as in ``compare``)."""
    result = compare(reference, candidate, feeds)
    for check in result.checks.values():
        structural = check.rule in ("non-finite values differ", "no finite values to compare",
                                    "integer values differ") or check.rule.startswith("shape")
        check.passed = not structural and check.cosine >= min_cosine
        if not structural:
            check.rule = f"cosine {check.cosine:.4f} (threshold {min_cosine})"
    result.failed = [n for n, c in result.checks.items() if not c.passed]
    result.passed = bool(result.samples) and not result.failed
    result.note = (f"approximate groups: cosine {result.min_cosine:.4f} to the masked original "
                   f"(threshold {min_cosine})")  # fmt: skip
    return result
