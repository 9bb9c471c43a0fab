"""Writing a model with its weights in one external data file (onnxprune/data_file.py): every
kind of tensor (in memory, read from a data file, a slice of one, computed) reads back with its
own values, large ones at aligned offsets; the model is left as it was; a small tensor read
from a file of the output's name is copied, never left referring to that name."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from onnxprune import data_file
from onnxprune.weights import Sliced, derived, sliced


def _external_source(folder, arrays: dict[str, np.ndarray], data_name: str) -> ir.Model:
    """A model whose initializers all live in ``folder/data_name``, loaded with onnx-ir (its
    tensors memory-mapped external tensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"], name=f"id_{n}") for n in arrays],
        "g", [], [helper.make_tensor_value_info(f"{n}_out", helper.np_dtype_to_tensor_dtype(
            a.dtype), a.shape) for n, a in arrays.items()],  # fmt: skip
        [onnx.numpy_helper.from_array(a, n) for n, a in arrays.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(proto, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_name, size_threshold=0)  # fmt: skip
    return ir.load(folder / "model.onnx")


def test_every_kind_of_tensor_reads_back_with_its_values(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"big": rng.standard_normal((64, 96)).astype(np.float32),
              "cube": rng.standard_normal((8, 12, 10)).astype(np.float32),
              "half": rng.standard_normal((40, 33)).astype(np.float16),
              "small": np.arange(7, dtype=np.int64),
              "bytes": rng.integers(-128, 127, (300, 5), dtype=np.int8)}  # fmt: skip
    # the source's data file has the output's data name: a small tensor left referring to it
    # would read the output's bytes instead
    model = _external_source(tmp_path / "src", arrays, "model.onnx.data")
    inits = model.graph.initializers
    assert all(isinstance(v.const_value, ir.ExternalTensor) for v in inits.values())
    rows, cols = np.array([0, 3, 4, 63]), np.array([1, 2, 50, 95])
    expected = dict(arrays)
    inits["big"].const_value = sliced(inits["big"].const_value, {0: rows, 1: cols}, "big")
    expected["big"] = arrays["big"][rows][:, cols]
    inits["cube"].const_value = sliced(inits["cube"].const_value, {1: np.array([0, 5, 11])},
                                       "cube")  # fmt: skip
    expected["cube"] = arrays["cube"][:, [0, 5, 11]]
    inits["half"].const_value = derived(inits["half"].const_value, lambda a: a * 2, (40, 33),
                                        "half")  # fmt: skip
    expected["half"] = arrays["half"] * 2
    memory = rng.standard_normal((600, 3)).astype(np.float32)
    tiny = np.array([1.5, -2.0], np.float32)
    model.graph.initializers["memory"] = ir.Value(name="memory", const_value=ir.Tensor(memory))
    model.graph.initializers["tiny"] = ir.Value(name="tiny", const_value=ir.Tensor(tiny))
    expected.update(memory=memory, tiny=tiny)
    assert isinstance(inits["big"].const_value, Sliced)
    before = {n: v.const_value for n, v in model.graph.initializers.items()}

    out = tmp_path / "out"
    out.mkdir()
    data_file.write(model, out / "model.onnx", "model.onnx.data")

    assert {n: v.const_value for n, v in model.graph.initializers.items()} == before
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    back = onnx.load(str(out / "model.onnx"), load_external_data=False)
    where = {t.name: {e.key: e.value for e in t.external_data} for t in back.graph.initializer}
    assert where["tiny"] == {}  # in memory and small: in the proto
    for name in ("small", "bytes", "memory"):
        assert where[name]["location"] == "model.onnx.data"
    assert int(where["memory"].get("offset", 0)) % data_file.ALIGN == 0 or (
        memory.nbytes <= data_file.ALIGN_OVER)  # fmt: skip
    loaded = onnx.load(str(out / "model.onnx"))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    for name, array in expected.items():
        assert values[name].dtype == array.dtype and np.array_equal(values[name], array), name


def test_large_tensors_start_at_aligned_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(data_file, "ALIGN_OVER", 1000)
    arrays = {f"w{i}": np.full((17 + i, 31), i, np.float32) for i in range(4)}
    model = _external_source(tmp_path / "src", arrays, "weights.bin")
    for value in model.graph.initializers.values():
        value.const_value = sliced(value.const_value, {1: np.arange(0, 31, 2)}, value.name)
    data_file.write(model, tmp_path / "m.onnx", "m.onnx.data")
    back = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    offsets = [int({e.key: e.value for e in t.external_data}.get("offset", 0))
               for t in back.graph.initializer]  # fmt: skip
    assert len(offsets) == 4 and all(o % data_file.ALIGN == 0 for o in offsets)
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    for t in loaded.graph.initializer:
        i = int(t.name[1:])
        assert np.array_equal(onnx.numpy_helper.to_array(t), np.full((17 + i, 16), i, np.float32))


def test_a_data_file_shorter_than_its_tensors_is_an_error(tmp_path):
    arrays = {"w": np.ones((64, 64), np.float32)}
    model = _external_source(tmp_path / "src", arrays, "w.bin")
    value = model.graph.initializers["w"]
    value.const_value = sliced(value.const_value, {0: np.arange(10)}, "w")
    with open(tmp_path / "src" / "w.bin", "r+b") as file:
        file.truncate(1000)
    with pytest.raises(ValueError, match="'w'.*ends early"):
        data_file.write(model, tmp_path / "m.onnx", "m.onnx.data")
