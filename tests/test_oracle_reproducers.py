"""Ways a wrong model used to pass the oracle, each now a failing check, beside a realistic
prune of the same model that passes; and models that only run at real sizes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from graphs import conv, model, weight
from onnxprune.cli import main
from onnxprune.errors import CalibrationDataError, UsageError
from onnxprune.input_sizes import decide_sizes
from onnxprune.verify import against_masked, compare, masked_model, ulp_perturbed, verify_plan


def attention(mask: bool = False) -> onnx.ModelProto:
    """x [batch, seq, 8] -> single-head attention over 8 query/key channels -> out-projection;
    with ``mask``, an additive key mask ``(1 - m) * finfo.min`` from a [batch, seq] input."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"], name="scores"),
    ]
    inits = {"wq": weight(8, 8, seed=1), "wk": weight(8, 8, seed=2), "wv": weight(8, 8, seed=3),
             "wo": weight(8, 8, seed=4)}  # fmt: skip
    inputs: dict = {"x": ["batch", "seq", 8]}
    if mask:
        nodes += [
            helper.make_node("Sub", ["one", "m"], ["inv"], name="inv"),
            helper.make_node("Mul", ["inv", "fmin"], ["bias0"], name="bias"),
            helper.make_node("Unsqueeze", ["bias0", "ax1"], ["bias"], name="unsq"),
            helper.make_node("Add", ["s0", "bias"], ["s"], name="masked"),
        ]
        inits |= {"one": np.array(1.0, np.float32),
                  "fmin": np.array(np.finfo(np.float32).min, np.float32),
                  "ax1": np.array([1], np.int64)}  # fmt: skip
        inputs["m"] = ["batch", "seq"]
    else:
        nodes.append(helper.make_node("Identity", ["s0"], ["s"], name="s_id"))
    nodes += [
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["a"], name="pv"),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]
    return model(nodes, inputs, {"y": ["batch", "seq", 8]}, inits)


def _with_initializer(pruned: ir.Model, name: str, change) -> ir.Model:
    broken = ir.from_proto(ir.to_proto(pruned))
    value = broken.graph.initializers[name]
    value.const_value = ir.Tensor(change(value.const_value.numpy().copy()), name=name)
    return broken


def _swap_columns(array: np.ndarray) -> np.ndarray:
    array[:, [0, 1]] = array[:, [1, 0]]
    return array


def test_scrambled_query_fails_at_the_default_sizes_though_one_token_would_pass():
    proto = attention()
    result = onnxprune.prune(proto, ratio=0.5)
    assert result.verification.passed and result.plan.removed
    shapes = result.verification.input_shapes
    assert shapes[0]["x"][1] > 1 and len(shapes) == 2 and shapes[0] != shapes[1]
    broken = _with_initializer(result.model, "wq", _swap_columns)
    masked = masked_model(result.original, result.plan)
    one_token = [{"x": np.random.default_rng(0).standard_normal((1, 1, 8)).astype(np.float32)}]
    assert compare(masked, broken, one_token).passed  # the outputs are blind at one token
    feeds = decide_sizes(result.original).random_feeds(result.original)
    assert compare(masked, broken, feeds).failed == ["y"]
    verdict = verify_plan(result.original, broken, result.plan, one_token)
    assert not verdict.passed and "weight 'wq'" in verdict.failed  # the weight check sees it


def test_the_weight_check_on_two_threads_sees_a_scrambled_weight(monkeypatch):
    """Large models check their weights two at a time (``weights.weight_map``); forced here on
    a small one, the scrambled query weight is still the one reported, and only it."""
    import onnxprune.weights as weights

    result = onnxprune.prune(attention(), ratio=0.5)
    broken = _with_initializer(result.model, "wq", _swap_columns)
    one_token = [{"x": np.random.default_rng(0).standard_normal((1, 1, 8)).astype(np.float32)}]
    pools = []
    real = weights.ThreadPoolExecutor
    monkeypatch.setattr(weights, "ThreadPoolExecutor", lambda n: pools.append(n) or real(n))
    monkeypatch.setattr(weights, "PARALLEL_OVER", 0)
    verdict = verify_plan(result.original, broken, result.plan, one_token)
    assert pools == [weights.THREADS]
    assert not verdict.passed and [f for f in verdict.failed if f.startswith("weight")] == [
        "weight 'wq'"]  # fmt: skip


def test_swapped_output_columns_fail_under_a_finfo_min_attention_mask():
    proto = attention(mask=True)
    rng = np.random.default_rng(0)
    m = (rng.random((2, 16)) < 0.7).astype(np.float32)
    m[:, 0] = 1
    feeds = [{"x": rng.standard_normal((2, 16, 8)).astype(np.float32), "m": m}]
    result = onnxprune.prune(proto, ratio=0.5, inputs=feeds)
    assert result.verification.passed
    # the noise run leaves the mask's scalars alone (one ulp below finfo.min is -inf)
    perturbed = ulp_perturbed(result.original)
    assert perturbed.graph.initializers["fmin"].const_value.numpy() == np.finfo(np.float32).min
    broken = _with_initializer(result.model, "wo", lambda a: a[[1, 0, *range(2, len(a))]])
    verdict = verify_plan(result.original, broken, result.plan, feeds)
    assert not verdict.passed and "rounding" not in verdict.note


def qdq_classifier(shift: float = 0.0) -> onnx.ModelProto:
    """x -> QuantizeLinear/DequantizeLinear (uint8, scale 0.05) -> MatMul -> logits, and a
    constant added to logit 3 (``shift``) standing for a corrupted rewrite."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("MatMul", ["xd", "w"], ["l0"], name="fc"),
        helper.make_node("Add", ["l0", "shift"], ["logits"], name="shift"),
    ]
    offset = np.zeros(10, np.float32)
    offset[3] = shift
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 10])],
        initializer=[numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                     numpy_helper.from_array(np.array(128, np.uint8), "z"),
                     numpy_helper.from_array(weight(32, 10, seed=5), "w"),
                     numpy_helper.from_array(offset, "shift")],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def test_a_shifted_logit_of_a_quantized_model_fails():
    feeds = [{"x": np.random.default_rng(s).standard_normal((4, 32)).astype(np.float32)}
             for s in range(4)]  # fmt: skip
    assert against_masked(qdq_classifier(), qdq_classifier(), feeds).passed
    verdict = against_masked(qdq_classifier(), qdq_classifier(0.5), feeds)
    assert not verdict.passed and verdict.failed == ["logits"]


def detector_head(double_scores: bool = False) -> onnx.ModelProto:
    """One output that concatenates pixel boxes (sigmoid x 640) and class scores (0..1)."""
    nodes = [
        conv("box", "x", "wb", "bb", "b0"),
        helper.make_node("Sigmoid", ["b0"], ["b1"], name="box_sig"),
        helper.make_node("Mul", ["b1", "px"], ["boxes"], name="box_px"),
        conv("cls", "x", "wc", "bc", "c0"),
        helper.make_node("Sigmoid", ["c0"], ["scores0"], name="cls_sig"),
        helper.make_node("Mul", ["scores0", "two" if double_scores else "unit"], ["scores"],
                         name="cls_scale"),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], name="cat", axis=1),
    ]  # fmt: skip
    inits = {"wb": weight(4, 8, 1, 1, seed=1), "bb": weight(4, seed=2),
             "wc": weight(6, 8, 1, 1, seed=3), "bc": weight(6, seed=4),
             "px": np.array(640, np.float32), "two": np.array(2, np.float32),
             "unit": np.array(1, np.float32)}  # fmt: skip
    return model(nodes, {"x": [1, 8, 5, 5]}, {"y": [1, 10, 5, 5]}, inits)


def test_doubled_class_scores_fail_beside_pixel_boxes_in_one_output():
    feeds = [{"x": np.random.default_rng(s).standard_normal((1, 8, 5, 5)).astype(np.float32)}
             for s in range(2)]  # fmt: skip
    assert against_masked(detector_head(), detector_head(), feeds).passed
    verdict = against_masked(detector_head(), detector_head(double_scores=True), feeds)
    assert not verdict.passed and verdict.failed == ["y"]


def _nan_output(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its output's first element replaced by NaN (Div 0/0 there)."""
    out = proto.graph.output[0].name
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    shape = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    zero_at = np.ones(shape, np.float32)
    zero_at.flat[0] = 0
    for node in broken.graph.node:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = "pre"
    broken.graph.node.extend([helper.make_node("Mul", ["pre", "z"], ["num"], name="nan_num"),
                              helper.make_node("Div", ["num", "z"], [out], name="nan_div")])
    broken.graph.initializer.append(numpy_helper.from_array(zero_at, "z"))
    return broken


def test_nan_outputs_other_shapes_and_zero_inputs_fail():
    proto = detector_head()
    feeds = [{"x": np.ones((1, 8, 5, 5), np.float32)}]
    verdict = compare(proto, _nan_output(proto), feeds)
    assert not verdict.passed and verdict.checks["y"].rule == "non-finite values differ"
    assert not compare(proto, proto, []).passed
    other = model([conv("c", "x", "w", None, "y")], {"x": [1, 8, 5, 5]}, {"y": [1, 3, 5, 5]},
                  {"w": weight(3, 8, 1, 1)})  # fmt: skip
    verdict = compare(proto, other, feeds)
    assert not verdict.passed and verdict.checks["y"].rule.startswith("shape")
    with pytest.raises(UsageError, match="inputs= is empty"):
        onnxprune.prune(proto, ratio=0.5, inputs=[])


def test_one_nan_pixel_in_the_digits_calibration_set_is_rejected(tmp_path, capsys):
    from pathlib import Path

    models = Path(__file__).parent.parent / "models"
    with np.load(models / "digits_calib.npz") as data:
        arrays = {k: data[k].copy() for k in data.files}
    name = next(iter(arrays))
    arrays[name][17].flat[5] = np.nan
    with pytest.raises(CalibrationDataError, match=f"'{name}'.*non-finite"):
        onnxprune.prune(models / "digits_cnn.onnx", target_macs=0.5, calibration=[arrays])
    bad = tmp_path / "calib.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "o.onnx"
    assert main(["prune", str(models / "digits_cnn.onnx"), "-o", str(out), "--target-macs",
                 "0.5", "--calib", str(bad)]) == 2  # fmt: skip
    assert "non-finite" in capsys.readouterr().err and not out.exists()


def test_verify_against_a_model_of_other_widths_and_zero_samples_fail(tmp_path, capsys):
    def cnn(width: int) -> onnx.ModelProto:
        return model([conv("c1", "x", "w1", "b1", "a"),
                      helper.make_node("Relu", ["a"], ["r"], name="relu"),
                      conv("c2", "r", "w2", "b2", "y")], {"x": [1, 3, 4, 4]},
                     {"y": [1, 2, 4, 4]}, {"w1": weight(width, 3, 1, 1), "b1": weight(width),
                                           "w2": weight(2, width, 1, 1), "b2": weight(2)})  # fmt: skip

    a, b, small = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "small.onnx"
    onnx.save(cnn(8), a)
    onnx.save(cnn(6), b)
    assert main(["prune", str(a), "-o", str(small), "--ratio", "0.5"]) == 0
    assert main(["verify", str(a), str(small)]) == 0
    capsys.readouterr()
    assert main(["verify", str(b), str(small)]) in (1, 2)
    assert "passed" not in capsys.readouterr().out
    assert main(["verify", str(a), str(small), "--samples", "0"]) == 2


def test_approximate_prune_is_reported_as_such_and_verify_agrees(tmp_path, capsys):
    from test_rules_normalization import mlp_with_layernorm

    path, out = tmp_path / "ln.onnx", tmp_path / "small.onnx"
    onnx.save(mlp_with_layernorm(), path)
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.25", "--allow-approximate",
                 "--approximate-min-cosine", "0.8"]) == 0  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert "approximate groups: cosine" in printed and "threshold 0.8" in printed
    assert main(["verify", str(path), str(out)]) == 0
    assert "approximate groups" in capsys.readouterr().out
    # a threshold the prune cannot meet fails it (exit 1) and writes nothing
    strict = tmp_path / "strict.onnx"
    assert main(["prune", str(path), "-o", str(strict), "--ratio", "0.5", "--allow-approximate",
                 "--approximate-min-cosine", "0.99999"]) == 1  # fmt: skip
    assert not strict.exists()


def fpn(pad: bool = False) -> onnx.ModelProto:
    """[batch, 3, height, width] -> conv stride 2 -> conv -> Resize x2 (FPN-style) + skip; with
    ``pad`` a reflect Pad of 2 on each spatial side first (fails at a length of 1 or 2)."""
    nodes = []
    src = "x"
    if pad:
        nodes.append(helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad", mode="reflect"))
        src = "xp"
    nodes += [
        conv("c1", src, "w1", "b1", "a", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "b2", "d", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Resize", ["d", "", "scales"], ["u"], name="up", mode="nearest"),
        helper.make_node("Add", ["u", "r"], ["f"], name="merge"),
        conv("head", "f", "w3", "b3", "y"),
    ]
    inits = {"w1": weight(8, 3, 3, 3, seed=1), "b1": weight(8, seed=2),
             "w2": weight(8, 8, 3, 3, seed=3), "b2": weight(8, seed=4),
             "w3": weight(4, 8, 1, 1, seed=5), "b3": weight(4, seed=6),
             "scales": np.array([1, 1, 2, 2], np.float32)}  # fmt: skip
    if pad:
        inits["pads"] = np.array([0, 0, 2, 2, 0, 0, 2, 2], np.int64)
    return model(nodes, {"x": ["batch", 3, "height", "width"]},
                 {"y": ["batch", 4, None, None]}, inits)  # fmt: skip


@pytest.mark.parametrize("pad", [False, True])
def test_models_that_fail_at_1x1_prune_with_no_option_at_sizes_named(tmp_path, capsys, pad):
    path, out = tmp_path / "fpn.onnx", tmp_path / "small.onnx"
    onnx.save(fpn(pad), path)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type at 1x1
        onnxprune.prune(path, ratio=0.5, dims={"height": 1, "width": 1})
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "counted at x 1x3x224x224" in printed and "passed" in printed
    assert "over 2 input(s) at x 1x3x224x224; x 2x3x256x256" in printed
    assert main(["verify", str(path), str(out)]) == 0


def test_a_model_that_runs_at_no_candidate_size_names_dim(tmp_path):
    proto = fpn()
    # a Reshape that only an 8x8 map (a 16x16 input) fits: no candidate size runs
    proto.graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["flat"], name="flat"))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, 4 * 64], np.int64),
                                                           "shape"))  # fmt: skip
    proto.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, None))
    with pytest.raises(UsageError, match="--dim"):
        onnxprune.prune(proto, ratio=0.5)
    with pytest.raises(UsageError, match="does not run at the given sizes x 1x3x14x14"):
        onnxprune.prune(proto, ratio=0.5, dims={"x": (1, 3, 14, 14)})
    result = onnxprune.prune(proto, ratio=0.5, dims={"x": (1, 3, 16, 16)})
    assert result.verification.passed and result.verification.input_shapes == [
        {"x": [1, 3, 16, 16]}]


def test_a_reflect_pad_on_a_symbolic_length_prunes_at_a_length_that_runs(tmp_path, capsys):
    """[batch, 4, length] -> reflect Pad of 3 -> Conv1d -> Relu -> Conv1d (a voice model's
    front end): at length 1 the Pad fails; the sequence-like length gets a size that runs."""
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad", mode="reflect"),
             conv("c1", "xp", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="r"),
             conv("c2", "r", "w2", "b2", "y")]  # fmt: skip
    inits = {"pads": np.array([0, 0, 3, 0, 0, 3], np.int64), "w1": weight(8, 4, 3, seed=1),
             "b1": weight(8, seed=2), "w2": weight(2, 8, 1, seed=3), "b2": weight(2, seed=4)}
    path, out = tmp_path / "voice.onnx", tmp_path / "small.onnx"
    onnx.save(model(nodes, {"x": ["batch", 4, "length"]}, {"y": ["batch", 2, None]}, inits),
              path)  # fmt: skip
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "counted at x 1x4x16" in printed and "x 1x4x16; x 2x4x24" in printed
