"""Shape inference into the working model: read back from the inference run on the proto a
file was loaded from (no skeleton serialized again) it gives every value the shape and type
the skeleton's gives, and those are onnx's own inference of the file."""

from __future__ import annotations

import onnx
import pytest

from onnxprune.analysis import normalize
from onnxprune.graph_values import all_values
from onnxprune.model_io import LOADED_INFERENCE, load_model
from onnxprune.shape_inference import infer_shapes


def _shapes(model) -> dict:
    return {name: (v.shape, v.dtype) for name, v in all_values(model.graph).items()}


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_shapes_inferred_on_the_loaded_proto_are_the_skeletons(exporter, tmp_path):
    import zoo

    proto = onnx.load(zoo.export("squeezenet1_1", exporter))
    del proto.graph.value_info[:]  # every intermediate shape is then the inference's
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    from_file, again = load_model(path), load_model(path)
    assert infer_shapes(from_file, from_file.meta[LOADED_INFERENCE])
    assert infer_shapes(again)  # on its skeleton
    assert _shapes(from_file) == _shapes(again)
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    assert len(inferred.graph.value_info) > 50
    values = all_values(from_file.graph)
    for info in inferred.graph.value_info:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        assert list(values[info.name].shape) == dims, info.name


def test_the_loaded_proto_serves_the_first_inference_only(tmp_path):
    import zoo

    path = zoo.export("squeezenet1_1", "torchscript")
    from_file = load_model(path)
    assert LOADED_INFERENCE in from_file.meta
    normalize(from_file)
    assert LOADED_INFERENCE not in from_file.meta  # later inferences see normalize's edits
    assert LOADED_INFERENCE not in load_model(onnx.load(path)).meta


def test_a_declared_shape_the_inference_knows_better_is_replaced(tmp_path):
    from onnx import helper

    from graphs import model

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="a"),
             helper.make_node("Relu", ["r"], ["y"], name="b")]  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(model(nodes, {"x": [1, 4]}, {"y": [1, 4]}, value_info={"r": ["n", 4]}), path)
    loaded = load_model(path)
    assert infer_shapes(loaded, loaded.meta[LOADED_INFERENCE])
    assert list(all_values(loaded.graph)["r"].shape) == [1, 4]
