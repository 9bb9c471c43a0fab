"""Mutation testing of the oracle: inject rewrite bugs into correctly pruned models and count
how many the oracle catches; a correct prune must pass (no false alarm).

Each mutation takes the original (normalised) model, the correctly pruned one and its plan,
and yields wrong pruned models, one per place it applies to (none where nothing fits):

- ``swap_consumer``: two kept channels swapped in a consumer's weight;
- ``off_by_one_index``: one kept index of a sliced weight moved onto a removed neighbour;
- ``bias_first_k``: a sliced vector (bias, norm parameters) cut as its first k entries;
- ``shape_constant_stale`` / ``shape_constant_off_by_one``: a rewritten Reshape/Split/Slice/...
  constant left at its original value, or one entry off by one;
- ``attribute_stale``: a rewritten attribute (``group``, ``num_heads``, ...) left as it was;
- ``wrong_axis``: a weight pruned on two axes of one size with the kept sets swapped;
- ``compensation_twice``: a compensated bias given its correction twice;
- ``refit_transposed``: a refit weight transposed (reversed where it is not square).

Run ``python tools/mutate_oracle.py`` (every model) or ``--fast`` (the subset ``make test``
runs); writes tools/results/mutate_oracle.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import onnxprune  # noqa: E402
from onnxprune.channel_graph import Dim  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.input_sizes import decide_sizes, random_inputs  # noqa: E402
from onnxprune.plan import RemovalPlan  # noqa: E402
from onnxprune.sessions import runs_on  # noqa: E402
from onnxprune.verify import compare, verify_plan  # noqa: E402

Mutation = Callable[[ir.Model, ir.Model, RemovalPlan], Iterator[ir.Model]]
MUTATIONS: dict[str, Mutation] = {}


def mutation(fn: Mutation) -> Mutation:
    MUTATIONS[fn.__name__] = fn
    return fn


def _copy(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def _array(model: ir.Model, name: str) -> np.ndarray | None:
    value = model.graph.initializers.get(name)
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _set(model: ir.Model, name: str, array: np.ndarray) -> ir.Model:
    model.graph.initializers[name].const_value = ir.Tensor(np.ascontiguousarray(array), name=name)
    return model


def _resliced(original: ir.Model, plan: RemovalPlan, name: str,
              change: dict[int, np.ndarray] | None = None) -> np.ndarray | None:  # fmt: skip
    """``name`` sliced from the original (refit values included) by the plan's kept
    positions, with ``change`` replacing the kept positions of some axes."""
    full = plan.weight_updates.get(name, _array(original, name))
    return None if full is None else plan.sliced(name, full, change)


def _sliced_tensors(original: ir.Model, pruned: ir.Model, plan: RemovalPlan):
    """(name, pruned axes) of tensors that are exactly the original sliced by the plan."""
    names = sorted({d.tensor for d in plan.kept})
    for name in names:
        small = _array(pruned, name)
        again = _resliced(original, plan, name)
        if small is None or again is None or small.dtype.kind != "f":
            continue
        if small.shape == again.shape and np.array_equal(small, again):
            yield name, [d.axis for d in plan.kept if d.tensor == name]


@mutation
def swap_consumer(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    nodes = {n.name: n for n in pruned.graph}
    for mask in plan.masks:
        node = nodes.get(mask.consumer.node)
        for value in [] if node is None else node.inputs:
            if value is None or value.name not in pruned.graph.initializers:
                continue
            for axis in [d.axis for d in plan.kept if d.tensor == value.name]:
                array = _array(pruned, value.name).copy()
                if array.shape[axis] < 2:
                    continue
                moved = np.moveaxis(array, axis, 0)
                if np.array_equal(moved[0], moved[1]):
                    continue
                moved[[0, 1]] = moved[[1, 0]]
                yield _set(_copy(pruned), value.name, array)


@mutation
def off_by_one_index(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    for name, axes in _sliced_tensors(original, pruned, plan):
        if _array(pruned, name).ndim < 2:
            continue
        for axis in axes:
            kept = plan.kept[Dim(name, axis)]
            removed = np.setdiff1d(np.arange(plan.old_sizes[Dim(name, axis)]), kept)
            for r in removed:
                near = np.flatnonzero(np.abs(kept - r) == 1)
                if near.size:
                    moved = np.sort(np.where(np.arange(kept.size) == near[0], r, kept))
                    yield _set(_copy(pruned), name,
                                _resliced(original, plan, name, {axis: moved}))  # fmt: skip


@mutation
def bias_first_k(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    for name, axes in _sliced_tensors(original, pruned, plan):
        kept = plan.kept[Dim(name, axes[0])]
        full = _array(original, name)
        if full.ndim == 1 and not np.array_equal(kept, np.arange(kept.size)):
            if not np.array_equal(full[: kept.size], full[kept]):
                yield _set(_copy(pruned), name, full[: kept.size])


_SHAPE_OPS = {"Reshape", "Split", "Slice", "Expand", "ConstantOfShape", "Resize", "Tile"}


def _rewritten_constants(original: ir.Model, pruned: ir.Model):
    """(node name or None, input index or initializer name, original array, pruned array) of
    shape constants that the rewrite changed: integer initializers rewritten in place (read
    through Concat and friends), and shape inputs of a node replaced by new ones."""
    for name in pruned.graph.initializers:
        old, new = _array(original, name), _array(pruned, name)
        if (old is not None and new is not None and old.dtype.kind in "iu"
                and old.shape == new.shape and not np.array_equal(old, new)):  # fmt: skip
            yield None, name, old, new
    before = {n.name: n for n in original.graph}
    for node in pruned.graph:
        old = before.get(node.name)
        if node.op_type not in _SHAPE_OPS or old is None:
            continue
        for i, (a, b) in enumerate(zip(old.inputs, node.inputs, strict=False)):
            if a is None or b is None or a.const_value is None or b.const_value is None:
                continue
            x, y = a.const_value.numpy(), b.const_value.numpy()
            if x.dtype.kind in "iu" and x.shape == y.shape and not np.array_equal(x, y):
                yield node.name, i, x, y


def _with_constant(pruned: ir.Model, node_name: str | None, index: int | str,
                   array: np.ndarray) -> ir.Model:  # fmt: skip
    model = _copy(pruned)
    if node_name is None:
        return _set(model, str(index), array)
    node = next(n for n in model.graph if n.name == node_name)
    name = f"{node_name}_mutated_{index}"
    value = ir.Value(name=name, shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))  # fmt: skip
    value.const_value = ir.Tensor(array, name=name)
    model.graph.register_initializer(value)
    node.replace_input_with(index, value)
    return model


@mutation
def shape_constant_stale(original: ir.Model, pruned: ir.Model,
                         plan: RemovalPlan) -> Iterator[ir.Model]:  # fmt: skip
    for node_name, index, old, _ in _rewritten_constants(original, pruned):
        yield _with_constant(pruned, node_name, index, old)


@mutation
def shape_constant_off_by_one(original: ir.Model, pruned: ir.Model,
                              plan: RemovalPlan) -> Iterator[ir.Model]:  # fmt: skip
    for node_name, index, old, new in _rewritten_constants(original, pruned):
        wrong = new.copy()
        where = np.flatnonzero(old.reshape(-1) != new.reshape(-1))[0]
        wrong.reshape(-1)[where] += 1
        yield _with_constant(pruned, node_name, index, wrong)


@mutation
def attribute_stale(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    before = {n.name: n for n in original.graph}
    model = _copy(pruned)
    for node in model.graph:
        old = before.get(node.name)
        for key, attr in ([] if old is None else old.attributes.items()):
            new = node.attributes.get(key)
            if new is not None and attr.type == ir.AttributeType.INT and new.value != attr.value:
                node.attributes[key] = ir.AttrInt64(key, attr.value)
                yield model
                model = _copy(pruned)


@mutation
def wrong_axis(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    for name, axes in _sliced_tensors(original, pruned, plan):
        for a in axes:
            for b in axes:
                ka, kb = plan.kept[Dim(name, a)], plan.kept[Dim(name, b)]
                if a < b and ka.size == kb.size and not np.array_equal(ka, kb) and (
                        plan.old_sizes[Dim(name, a)] == plan.old_sizes[Dim(name, b)]):
                    yield _set(_copy(pruned), name,
                                _resliced(original, plan, name, {a: kb, b: ka}))  # fmt: skip


@mutation
def compensation_twice(original: ir.Model, pruned: ir.Model,
                       plan: RemovalPlan) -> Iterator[ir.Model]:  # fmt: skip
    nodes = {n.name: n for n in pruned.graph}
    before = {n.name: n for n in original.graph}
    for index in sorted(plan.fills):
        name = plan.masks[index].consumer.node
        node, old = nodes.get(name), before.get(name)
        if node is None or old is None or len(node.inputs) < 3 or node.inputs[2] is None:
            continue
        bias = node.inputs[2]
        small = _array(pruned, bias.name)
        old_bias = old.inputs[2] if len(old.inputs) > 2 else None
        again = (np.zeros_like(small) if old_bias is None
                 else _resliced(original, plan, old_bias.name))  # fmt: skip
        if small is not None and again is not None and small.shape == again.shape:
            yield _set(_copy(pruned), bias.name, small + (small - again))


@mutation
def refit_transposed(original: ir.Model, pruned: ir.Model, plan: RemovalPlan) -> Iterator[ir.Model]:
    for name in sorted(plan.weight_updates):
        small = _array(pruned, name)
        if small is None or small.ndim < 2:
            continue
        wrong = small.T if small.ndim == 2 and small.shape[0] == small.shape[1] else small[::-1]
        if not np.array_equal(wrong, small):
            yield _set(_copy(pruned), name, wrong)


def caught(original: ir.Model, mutant: ir.Model, plan: RemovalPlan, feeds: list) -> bool:
    """The oracle rejects ``mutant`` (a model onnxruntime refuses counts as rejected)."""
    try:
        return not verify_plan(original, mutant, plan, feeds).passed
    except OnnxPruneError:
        return True


def equivalent(pruned: ir.Model, mutant: ir.Model, probes: list) -> bool:
    """``mutant`` computes what the correct prune computes, judged on probe inputs other than
    the oracle's (more of them, other seeds): a key bias shifts every score of a softmax
    alike, a removed and a kept channel may hold equal weights at random init."""
    try:
        return compare(pruned, mutant, probes).passed
    except OnnxPruneError:
        return False


MAX_CANDIDATES = 6


def mutate(source, **options) -> dict:
    """Prune ``source`` correctly with ``options``, then each mutation: its first candidates
    that change the function (on probe inputs) must all be caught by the oracle on its own
    inputs. Verdicts: True caught, False missed, "equivalent" (every candidate computes the
    same function), None (nothing to mutate)."""
    result = onnxprune.prune(source, **options)
    original, plan = result.original, result.plan
    sizes = decide_sizes(original, options.get("dims"), None, runs_on(original))
    feeds = sizes.random_feeds(original)
    probes = [random_inputs(original, sizes.second or sizes.shapes, seed=100 + k)
              for k in range(3)] + [random_inputs(original, sizes.shapes, seed=99)]  # fmt: skip
    row = {"correct_prune_passes": verify_plan(original, result.model, plan, feeds).passed,
           "removed_groups": len(plan.removed), "mutations": {}}  # fmt: skip
    for name, fn in MUTATIONS.items():
        verdict: bool | str | None = None
        for mutant in itertools.islice(fn(original, result.model, plan), MAX_CANDIDATES):
            if equivalent(result.model, mutant, probes):
                verdict = "equivalent" if verdict is None else verdict
                continue
            verdict = caught(original, mutant, plan, feeds) and verdict is not False
            if verdict is False:
                break
        row["mutations"][name] = verdict
    return row


def detector_head() -> onnx.ModelProto:
    """Backbone conv -> one output that concatenates pixel boxes (sigmoid x 640) and class
    scores (0..1); the backbone width prunes."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["f0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f0"], ["f"], name="relu"),
        helper.make_node("Conv", ["f", "wb", "bb"], ["b"], name="box"),
        helper.make_node("Sigmoid", ["b"], ["bs"], name="box_sig"),
        helper.make_node("Mul", ["bs", "px"], ["boxes"], name="box_px"),
        helper.make_node("Conv", ["f", "wc", "bc"], ["c"], name="cls"),
        helper.make_node("Sigmoid", ["c"], ["scores"], name="cls_sig"),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], name="cat", axis=1),
    ]
    inits = {"w0": w(16, 3, 3, 3), "b0": w(16), "wb": w(4, 16, 1, 1), "bb": w(4),
             "wc": w(6, 16, 1, 1), "bc": w(6), "px": np.array(640, np.float32)}  # fmt: skip
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 10, "h", "w"])],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def cases(fast: bool) -> dict[str, Callable[[], dict]]:
    """Model name -> a function pruning it and running every mutation."""
    digits = ROOT / "models" / "digits_cnn.onnx"
    calib = str(ROOT / "models" / "digits_calib.npz")
    out: dict[str, Callable[[], dict]] = {
        "digits CNN (real weights; calibrated, refit)": lambda: mutate(
            digits, target_macs=0.5, calibration=calib, refit=True),
        "digits CNN (real weights; calibrated, compensated)": lambda: mutate(
            digits, target_macs=0.5, calibration=calib, compensate=True, refit=False),
        "digits CNN (magnitude)": lambda: mutate(digits, ratio=0.5),
        "detector head, boxes and scores in one output": lambda: mutate(detector_head(),
                                                                        ratio=0.5),
    }  # fmt: skip
    import transformer_zoo

    out["BERT, masked attention (torchscript)"] = lambda: mutate(
        transformer_zoo.export("bert", "torchscript"), ratio=0.5)
    out["BERT, onnxruntime-fused Attention (num_heads)"] = lambda: mutate(
        transformer_zoo.export_ort_optimized("bert"), ratio=0.5)
    out["Llama, GQA + RoPE (dynamo)"] = lambda: mutate(
        transformer_zoo.export("llama", "dynamo"), ratio=0.5)
    if fast:
        return out
    import zoo

    out["Llama, GQA + RoPE (torchscript)"] = lambda: mutate(
        transformer_zoo.export("llama", "torchscript"), ratio=0.5)
    out["Llama, GQA + RoPE, head_dim (dynamo)"] = lambda: mutate(
        transformer_zoo.export("llama", "dynamo"), ratio=0.5, head_dim=True)
    out["GPT-2, fused QKV split (torchscript)"] = lambda: mutate(
        transformer_zoo.export("gpt2", "torchscript"), ratio=0.5)
    out["vit_b_16 (dynamo)"] = lambda: mutate(transformer_zoo.export("vit_b_16", "dynamo"),
                                              ratio=0.5)
    out["resnet18 (torchscript)"] = lambda: mutate(zoo.export("resnet18", "torchscript"),
                                                   ratio=0.5)
    out["mobilenet_v2, depthwise groups (dynamo)"] = lambda: mutate(
        zoo.export("mobilenet_v2", "dynamo"), ratio=0.5)
    return out


def table(rows: dict[str, dict]) -> str:
    names = list(MUTATIONS)
    lines = ["| model | correct prune | " + " | ".join(names) + " | caught |",
             "|---|---|" + "---|" * len(names) + "---:|"]
    for model, row in rows.items():
        verdicts = [row["mutations"][n] for n in names]
        applied = [v for v in verdicts if isinstance(v, bool)]
        cells = ["n/a" if v is None else v if isinstance(v, str) else
                 ("caught" if v else "**MISSED**") for v in verdicts]  # fmt: skip
        lines.append(f"| {model} | {'passes' if row['correct_prune_passes'] else '**FAILS**'} | "
                     + " | ".join(cells) + f" | {sum(applied)}/{len(applied)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the make-test subset")
    args = parser.parse_args()
    rows = {}
    for name, run in cases(args.fast).items():
        print(f"{name} ...", flush=True)
        rows[name] = run()
    results = ROOT / "tools" / "results"
    (results / "mutate_oracle.json").write_text(json.dumps(rows, indent=1))
    md = ("Oracle mutation testing (tools/mutate_oracle.py): each cell is one kind of injected "
          f"rewrite bug, tried on up to {MAX_CANDIDATES} places of the model; caught = the "
          "oracle rejected every candidate that changes the model's function (judged on other "
          "inputs than the oracle's); equivalent = every candidate computes the same function "
          "(nothing to catch); n/a = nothing to mutate.\n\n" + table(rows) + "\n")
    (results / "mutate_oracle.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
