"""Loading and saving: every source kind, external data, atomic writes, clear errors."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import onnxprune
from graphs import conv, feeds, model, run, weight
from onnxprune import wire
from onnxprune.errors import ModelLoadError, UsageError
from onnxprune.model_io import load_model, save_model


def small_model() -> onnx.ModelProto:
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", None, "y"),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(2, 8, 1, 1)}
    return model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)


@pytest.mark.parametrize("kind", ["path", "proto", "ir"])
def test_every_source_kind_loads_and_is_left_untouched(tmp_path, kind):
    proto = small_model()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    before = path.read_bytes()
    source = {"path": path, "proto": proto, "ir": ir.from_proto(proto)}[kind]
    result = onnxprune.prune(source, ratio=0.5, inputs=feeds(proto))
    assert result.verification.passed
    assert path.read_bytes() == before
    assert len(proto.graph.node) == 3 and proto.graph.initializer[0].dims[0] == 8


def test_external_data_model_loads_prunes_and_saves_with_external_data(tmp_path):
    proto = small_model()
    path = tmp_path / "ext.onnx"
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.weights", size_threshold=0)
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds(proto))
    (tmp_path / "out").mkdir()
    out = result.save(tmp_path / "out" / "pruned.onnx")
    assert (tmp_path / "out" / "pruned.onnx.data").exists()
    reloaded = onnx.load(out)
    feed = feeds(proto)[0]
    np.testing.assert_allclose(run(reloaded, feed)[0], run(result.to_proto(), feed)[0], rtol=1e-6)
    assert sorted(os.listdir(tmp_path / "out")) == ["pruned.onnx", "pruned.onnx.data"]


def test_constant_nodes_are_treated_like_initializers():
    w1 = helper.make_node("Constant", [], ["w1"], name="w1_const",
                          value=onnx.numpy_helper.from_array(weight(8, 3, 1, 1)))
    nodes = [w1, conv("c1", "x", "w1", None, "a"), helper.make_node("Relu", ["a"], ["r"]),
             conv("c2", "r", "w2", None, "y")]
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, {"w2": weight(2, 8, 1, 1)})
    result = onnxprune.prune(proto, ratio=0.5, inputs=feeds(proto))
    assert result.verification.passed and result.plan.removed


def test_a_loaded_file_owns_its_weights_and_lets_the_proto_go(tmp_path):
    """Weights stored in the file are copied out of the parsed proto once at load (protobuf
    copies a bytes field on every read), values unchanged, no tensor left pointing into it."""
    w1 = weight(8, 3, 1, 1)
    nodes = [helper.make_node("Constant", [], ["w1"], value=onnx.numpy_helper.from_array(w1)),
             conv("c1", "x", "w1", None, "a"), helper.make_node("Relu", ["a"], ["r"]),
             conv("c2", "r", "w2", None, "y")]  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, {"w2": weight(2, 8, 1, 1)})
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    loaded = load_model(path)
    tensors = [v.const_value for v in loaded.graph.initializers.values()] + [
        a.value for n in loaded.graph for a in n.attributes.values()
        if a.type == ir.AttributeType.TENSOR]  # fmt: skip
    assert len(tensors) == 2
    assert not any(isinstance(t, ir.serde.TensorProtoTensor) for t in tensors)
    assert np.array_equal(loaded.graph.initializers["w2"].const_value.numpy(),
                          onnx.numpy_helper.to_array(proto.graph.initializer[0]))  # fmt: skip
    assert np.array_equal(tensors[1].numpy(), w1)


def test_large_weights_of_every_type_load_with_their_values(tmp_path):
    """Large initializers are read out of the file beside the parsed proto (``wire``),
    each in its own type (bfloat16, not a plain numpy type, is parsed as before); a raw
    payload that does not fill its shape is a load error naming the tensor."""
    rng = np.random.default_rng(0)
    arrays = {"f32": rng.standard_normal((64, 160)).astype(np.float32),
              "f16": rng.standard_normal((64, 300)).astype(np.float16),
              "f64": rng.standard_normal((4100,)),
              "i64": rng.integers(-9, 9, (4100,)), "i8": rng.integers(-9, 9, (40000,), np.int8),
              "u16": rng.integers(0, 9, (20000,), np.uint16), "b": rng.random(40000) < 0.5,
              "small": rng.standard_normal(8).astype(np.float32)}  # fmt: skip
    proto = model([helper.make_node("Identity", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, arrays)
    bf16 = helper.make_tensor("bf16", onnx.TensorProto.BFLOAT16, [40000], np.zeros(40000),
                              raw=False)  # fmt: skip
    proto.graph.initializer.append(bf16)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    loaded = load_model(path).graph.initializers
    for name, array in arrays.items():
        got = loaded[name].const_value.numpy()
        assert got.dtype == array.dtype and np.array_equal(got, array), name
    assert np.array_equal(loaded["bf16"].const_value.numpy().astype(np.float32), np.zeros(40000))
    next(t for t in proto.graph.initializer if t.name == "f32").dims[0] = 65
    onnx.save(proto, path)
    with pytest.raises(ModelLoadError, match="initializer 'f32' .* holds 40,960 bytes"):
        load_model(path)


def test_a_saved_model_writes_large_weights_from_their_arrays_as_onnx_reads_them(tmp_path):
    """``save_model`` writes the proto without the large weights and each of them straight
    from its array (``wire.write_model``): onnx reads back every initializer, of every type
    (bfloat16 through ``tobytes``), with the graph ``ir.save`` writes, and the checker
    passes."""
    rng = np.random.default_rng(1)
    arrays = {"f32": rng.standard_normal((64, 160)).astype(np.float32),
              "f16": rng.standard_normal((64, 300)).astype(np.float16),
              "i64": rng.integers(-9, 9, (4100,)), "b": rng.random(40000) < 0.5,
              "view": rng.standard_normal((200, 100)).astype(np.float32)[:, ::2],
              "small": rng.standard_normal(8).astype(np.float32)}  # fmt: skip
    proto = model([helper.make_node("Identity", ["x"], ["y"])], {"x": [2]}, {"y": [2]}, arrays)
    words = [f"word{i}".encode() for i in range(10000)]  # strings stay in the proto
    proto.graph.initializer.append(helper.make_tensor("vocab", onnx.TensorProto.STRING,
                                                      [10000], words))  # fmt: skip
    source = ir.from_proto(proto)
    bf16 = ir.Tensor(rng.standard_normal(40000).astype(np.float32), name="bf16")
    bf16 = ir.Tensor(bf16.numpy().astype(ir.DataType.BFLOAT16.numpy()), name="bf16")
    source.graph.register_initializer(ir.Value(name="bf16", const_value=bf16))
    save_model(source, tmp_path / "ours.onnx")
    ir.save(source, tmp_path / "reference.onnx")
    ours, reference = (onnx.load(tmp_path / f"{n}.onnx") for n in ("ours", "reference"))
    read = {t.name: onnx.numpy_helper.to_array(t) for t in ours.graph.initializer}
    assert read.keys() == {*arrays, "bf16", "vocab"}
    assert [w.encode() for w in read["vocab"]] == words
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and np.array_equal(read[name], array), name
    assert read["bf16"].tobytes() == bf16.tobytes()
    assert ours.graph.node == reference.graph.node and ours.opset_import == reference.opset_import
    assert (tmp_path / "ours.onnx").stat().st_size == (tmp_path / "reference.onnx").stat().st_size
    onnx.checker.check_model(ours, full_check=True)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load_model(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.onnx"
    data = small_model().SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_save_refuses_to_overwrite_the_input(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(small_model(), path)
    before = path.read_bytes()
    result = onnxprune.prune(path, ratio=0.5, inputs=feeds(small_model()))
    with pytest.raises(UsageError, match="which the input model reads"):
        result.save(path)
    assert path.read_bytes() == before


def test_failed_save_leaves_no_file_behind(tmp_path, monkeypatch):
    result = onnxprune.prune(small_model(), ratio=0.5, inputs=feeds(small_model()))

    def boom(model, path, *args, **kwargs):  # half a file, then the disk is full
        with open(path, "wb") as file:
            file.write(b"\x08\x07")
        raise OSError("disk full")

    monkeypatch.setattr(ir, "save", boom)
    monkeypatch.setattr(wire, "write_model", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(result.model, tmp_path / "pruned.onnx")
    assert os.listdir(tmp_path) == []
