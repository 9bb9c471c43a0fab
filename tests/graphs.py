"""Small real ONNX graphs for rule tests, and the oracle assertion every rule test runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune

RNG = np.random.default_rng(0)


def weight(*shape: int, seed: int | None = None) -> np.ndarray:
    rng = RNG if seed is None else np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str]],
    outputs: dict[str, Sequence[int | str] | None],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    extra_opsets: dict[str, int] | None = None,
    value_info: dict[str, Sequence[int | str]] | None = None,
) -> onnx.ModelProto:
    """A checked model from nodes, named input/output shapes and initializer arrays."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()],
        value_info=[
            helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
            for n, s in (value_info or {}).items()
        ],
    )
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    proto = helper.make_model(graph, opset_imports=opsets)
    proto.ir_version = 8
    if not extra_opsets:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def feeds(proto: onnx.ModelProto, n: int = 2, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = {}
        for inp in proto.graph.input:
            shape = [d.dim_value if d.dim_value else 1 for d in inp.type.tensor_type.shape.dim]
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        out.append(feed)
    return out


def run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def params(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == 1)


def assert_exact(result: onnxprune.PruneResult, max_rel_l2: float = 1e-4) -> None:
    """The oracle passed on its plain float tolerance (not by the rounding-noise allowance),
    with every output's relative L2 error within ``max_rel_l2``."""
    v = result.verification
    assert v is not None and v.passed, v
    escaped = [name for name, check in v.checks.items() if check.rule == "rounding noise"]
    assert not escaped, f"passed only by the rounding-noise allowance: {escaped} ({v.note})"
    assert v.max_rel_diff <= max_rel_l2, f"relative L2 error {v.max_rel_diff:.2g} ({v.note})"


def assert_prunes_exactly(
    proto: onnx.ModelProto, ratio: float = 0.5, *, min_groups: int = 1, **options
) -> onnxprune.PruneResult:
    """Prune at ``ratio`` and check the oracle, that ratio 0 is the identity, that outputs keep
    their names and shapes, and that at least ``min_groups`` groups actually shrank."""
    data = feeds(proto, **({} if "seed" not in options else {"seed": options.pop("seed")}))
    result = onnxprune.prune(proto, ratio=ratio, inputs=data, **options)
    assert_exact(result)
    assert len(result.plan.removed) >= min_groups, "expected pruned groups"
    pruned = result.to_proto()
    assert [o.name for o in pruned.graph.output] == [o.name for o in proto.graph.output]
    for feed in data:
        for a, b in zip(run(proto, feed), run(pruned, feed), strict=True):
            assert a.shape == b.shape
    if min_groups:
        assert params(pruned) < params(proto)
    identity = onnxprune.prune(proto, ratio=0.0, inputs=data, **options)
    for feed in data:
        for a, b in zip(run(proto, feed), run(identity.to_proto(), feed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return result


def conv(name: str, x: str, w: str, b: str | None, y: str, **attrs) -> onnx.NodeProto:
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [y], name=name, **attrs)
