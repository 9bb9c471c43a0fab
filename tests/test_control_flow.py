"""Control flow: If branches are analysed like the main graph. A channel group whose
consumers sit in both branches (torch's data-dependent ``if``) or whose weights are held in
Constant nodes inside the branches prunes, sliced in each branch, and passes the oracle on
inputs that take each branch; a Loop body reading a channel blocks it, naming the Loop."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from graphs import assert_exact, run


class _Branchy:
    """stem Conv -> Relu -> if mean > 0.5: 1x1 Conv else 3x3 Conv x 2 -> Relu -> head Conv."""

    @staticmethod
    def export(path: Path) -> None:
        import torch

        class Branchy(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
                self.bright = torch.nn.Conv2d(8, 6, 1)
                self.dark = torch.nn.Conv2d(8, 6, 3, padding=1)
                self.head = torch.nn.Conv2d(6, 2, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                r = torch.relu(self.stem(x))
                if bool(r.mean() > 0.5):
                    y = self.bright(r)
                else:
                    y = self.dark(r) * 2.0
                return self.head(torch.relu(y))

        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch.jit.script(Branchy().eval()), (torch.randn(1, 3, 16, 16),),
                              str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              opset_version=17,
                              dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})  # fmt: skip


def _branch_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": (scale * rng.standard_normal((1, 3, 16, 16))).astype(np.float32)}
            for scale in (20.0, 0.01)]  # fmt: skip


def test_torch_data_dependent_branch_prunes_in_both_branches(tmp_path):
    path = tmp_path / "branchy.onnx"
    _Branchy.export(path)
    original = onnx.load(path)
    assert [n.op_type for n in original.graph.node].count("If") == 1
    feeds = _branch_feeds()
    # the two feeds take different branches: their outputs come from different convolutions
    stem_means = []
    probe = onnx.load(path)
    relu = next(n for n in probe.graph.node if n.op_type == "Relu")
    probe.graph.output.append(helper.make_tensor_value_info(relu.output[0], TensorProto.FLOAT, None))
    for feed in feeds:
        stem_means.append(float(run(probe, feed)[1].mean()))
    assert stem_means[0] > 0.5 > stem_means[1]
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds)
    assert_exact(result)
    widths = {t.name: list(t.dims) for t in result.to_proto().graph.initializer}
    assert widths["bright.weight"][0] == 3 and widths["dark.weight"][0] == 3
    assert widths["head.weight"][1] == 3


def _stem_if(rng: np.random.Generator, then_branch: Callable[[], onnx.GraphProto],
             else_branch: Callable[[], onnx.GraphProto], *, if_output: str = "y",
             tail: Sequence[onnx.NodeProto] = (), inits: Sequence[onnx.TensorProto] = (),
             y_shape: list[int] | None = (1, 2, 8, 8)) -> onnx.ModelProto:  # fmt: skip
    """x (1x3x8x8) -> Conv 'c1' (8 channels, weight 'w1') -> Relu -> 'r', which the branches
    read from the outer scope; an If on sum(x) > 0 gives ``if_output``; ``tail`` nodes after
    it produce 'y'."""
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], [if_output], name="if", then_branch=then_branch(),
                              else_branch=else_branch()), *tail]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       None if y_shape is None else list(y_shape))],
        [w1, zero, *inits])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _if_with_constant_weights() -> onnx.ModelProto:
    """x -> Conv(8) -> Relu -> If(cond): each branch a 1x1 Conv whose weight is a Constant
    node inside the branch, reading the outer Relu output."""
    rng = np.random.default_rng(1)

    def branch(name: str) -> onnx.GraphProto:
        weight = numpy_helper.from_array(rng.standard_normal((2, 8, 1, 1)).astype(np.float32))
        nodes = [helper.make_node("Constant", [], [f"{name}_w"], name=f"{name}_const",
                                  value=weight),
                 helper.make_node("Conv", ["r", f"{name}_w"], [f"{name}_y"], name=f"{name}_conv")]  # fmt: skip
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 2, 8, 8])
        return helper.make_graph(nodes, name, [], [out])

    return _stem_if(rng, lambda: branch("then"), lambda: branch("else"))


def test_constant_weights_inside_branches_are_sliced_in_each_branch():
    model = _if_with_constant_weights()
    feeds = [{"x": np.full((1, 3, 8, 8), sign, np.float32)
              + 0.1 * np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)}
             for sign in (1.0, -1.0)]  # fmt: skip
    result = onnxprune.prune(model, ratio=0.5, inputs=feeds)
    assert_exact(result)
    pruned = result.to_proto()
    if_node = next(n for n in pruned.graph.node if n.op_type == "If")
    for attr in if_node.attribute:
        dims = [list(t.dims) for t in attr.g.initializer] + [
            list(a.t.dims) for n in attr.g.node if n.op_type == "Constant" for a in n.attribute]
        assert dims == [[2, 4, 1, 1]], (attr.name, dims)
    for feed in feeds:
        assert run(pruned, feed)[0].shape == (1, 2, 8, 8)


def test_a_loop_body_reading_a_channel_blocks_it():
    model = _if_with_constant_weights()
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
         helper.make_node("ReduceSum", ["r"], ["partial"], name="loop_sum", keepdims=0)],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("partial", TensorProto.FLOAT, [])])  # fmt: skip
    trips = numpy_helper.from_array(np.array(2, np.int64), "trips")
    model.graph.initializer.append(trips)
    model.graph.node.append(helper.make_node("Loop", ["trips", ""], ["sums"], name="loop",
                                             body=body))  # fmt: skip
    model.graph.output.append(helper.make_tensor_value_info("sums", TensorProto.FLOAT, [2]))
    analysis = onnxprune.analyze(model)
    stem = next(g for g in analysis.groups if any(d.tensor == "w1" for d in g.atom_of))
    assert not stem.prunable
    assert any("Loop subgraph" in str(r) for r in stem.blocked), [str(r) for r in stem.blocked]


@pytest.mark.parametrize("ratio", [0.25, 0.75])
def test_branch_groups_prune_at_other_ratios(ratio):
    result = onnxprune.prune(_if_with_constant_weights(), ratio=ratio)
    assert_exact(result)


def test_an_if_output_of_unknown_rank_blocks_what_its_branches_return():
    """Branches returning different ranks (then: the 4-D activation, else: it flattened) give
    the If output no rank, so its readers cannot be mapped: the channels the branches return
    are blocked rather than shrunk under a reader that still expects them all (the pattern
    of silero-vad's decoder)."""
    rng = np.random.default_rng(3)

    def branch(name: str, op: str) -> onnx.GraphProto:
        shape = [1, 8, 8, 8] if op == "Identity" else [1, 512]
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, shape)
        return helper.make_graph([helper.make_node(op, ["r"], [f"{name}_y"], name=f"{name}_op")],
                                 name, [], [out])  # fmt: skip

    w2 = numpy_helper.from_array(rng.standard_normal((2, 8, 1, 1)).astype(np.float32), "w2")
    model = _stem_if(rng, lambda: branch("then", "Identity"), lambda: branch("else", "Flatten"),
                     if_output="b", tail=[helper.make_node("Conv", ["b", "w2"], ["y"], name="c2")],
                     inits=[w2], y_shape=None)  # fmt: skip
    analysis = onnxprune.analyze(model)
    stem = next(g for g in analysis.groups if any(d.tensor == "w1" for d in g.atom_of))
    assert not stem.prunable
    assert any("If output 0" in str(r) for r in stem.blocked), [str(r) for r in stem.blocked]
