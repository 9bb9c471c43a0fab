"""Bad input through the CLI: each a one-line error, exit 2, the input untouched and nothing
left in the output folder (truncated or mutated model bytes, plans, calibration files,
option values)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_model_io import small_model

from onnxprune.cli import main


@pytest.fixture
def folder(tmp_path) -> Path:
    onnx.save(small_model(), tmp_path / "m.onnx")
    return tmp_path


def _clean_failure(args: list[str], folder: Path, capsys, codes=(2,)) -> str:
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code = main(args)
    err = capsys.readouterr().err
    assert code in codes, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing changed
    return err


def _prune(folder: Path, *extra: str) -> list[str]:
    return ["prune", str(folder / "m.onnx"), "-o", str(folder / "out.onnx"), *extra]


PLANS = {
    "garbage": "not json {",
    "empty": "",
    "no removed": json.dumps({"options": {}}),
    "fractional channel": json.dumps({"removed": {"0": [0.5]}}),
    "nested channels": json.dumps({"removed": {"0": [[1, 2]]}}),
    "unknown group": json.dumps({"removed": {"99": [0]}}),
    "channel out of range": json.dumps({"removed": {"0": [1000]}}),
    "fills of the wrong shape": json.dumps({"removed": {"0": [0]}, "fills": {"0": [1, 2, 3]}}),
}


@pytest.mark.parametrize("kind", sorted(PLANS))
def test_bad_plans(folder, capsys, kind):
    plan = folder / "plan.json"
    plan.write_text(PLANS[kind])
    _clean_failure(_prune(folder, "--plan", str(plan)), folder, capsys)


def test_missing_plan(folder, capsys):
    _clean_failure(_prune(folder, "--plan", str(folder / "nope.json")), folder, capsys)


def test_bad_calibration_files(folder, capsys):
    objects = folder / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object))
    err = _clean_failure(_prune(folder, "--ratio", "0.5", "--calib", str(objects)), folder,
                         capsys)  # fmt: skip
    assert "allow_pickle" not in err
    not_zip = folder / "fake.npz"
    not_zip.write_bytes(b"PK\x03\x04 this is not a zip archive")
    _clean_failure(_prune(folder, "--ratio", "0.5", "--calib", str(not_zip)), folder, capsys)


@pytest.mark.parametrize("extra", [
    ["--ratio", "1.5"], ["--ratio", "-0.1"], ["--target-macs", "0"], ["--target-macs", "2"],
    ["--ratio", "0.5", "--random", "-5"], ["--ratio", "0.5", "--round-to", "0"],
    ["--ratio", "0.5", "--min-channels", "0"], ["--ratio", "0.5", "--dim", "batch=²"],
    ["--ratio", "0.5", "--dim", "nosuchdim=4"], ["--ratio", "0.5", "--dim", "x=1,3,2"],
    ["--ratio", "0.5", "--dim", "x=1,4,2,2"], ["--ratio", "0.5", "--dim", "x=0,3,2,2"],
    ["--ratio", "0.5", "--providers", "BogusExecutionProvider"],
    ["--ratio", "0.5", "--criterion", "wanda"],
])  # fmt: skip
def test_bad_option_values(folder, capsys, extra):
    _clean_failure(_prune(folder, *extra), folder, capsys)


def test_verify_with_garbage_plan_metadata(folder, capsys):
    model = onnx.load(folder / "m.onnx")
    model.metadata_props.add(key="onnxprune.plan", value="{not json")
    onnx.save(model, folder / "bad.onnx")
    _clean_failure(["verify", str(folder / "m.onnx"), str(folder / "bad.onnx")], folder, capsys)


def test_bench_of_models_with_other_inputs(folder, capsys):
    other = small_model()
    other.graph.input[0].name = "z"
    other.graph.node[0].input[0] = "z"
    onnx.save(other, folder / "other.onnx")
    _clean_failure(["bench", str(folder / "m.onnx"), str(folder / "other.onnx")], folder, capsys)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=400), flips=st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_truncated_or_mutated_model_bytes(tmp_path_factory, capsys, cut, flips):
    folder = tmp_path_factory.mktemp("fuzz")
    data = bytearray(small_model().SerializeToString())
    data = data[: max(1, len(data) - cut)]
    for where, value in flips:
        data[where % len(data)] = value
    (folder / "m.onnx").write_bytes(bytes(data))
    before = bytes(data)
    code = main(["prune", str(folder / "m.onnx"), "-o", str(folder / "out.onnx"), "--ratio",
                 "0.5"])  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2), (code, err)  # a flip may leave a valid model (then it prunes)
    assert (folder / "m.onnx").read_bytes() == before
    leftovers = {p.name for p in folder.iterdir()} - {"m.onnx", "out.onnx", "out.onnx.data"}
    assert not leftovers and (code == 0 or not (folder / "out.onnx").exists())


def _invalid(kind: str) -> onnx.ModelProto:
    proto = small_model()
    if kind == "duplicate initializer":
        proto.graph.initializer.append(onnx.numpy_helper.from_array(
            np.zeros((8, 3, 1, 1), np.float32), "w1"))  # fmt: skip
    elif kind == "no opset":
        del proto.opset_import[:]
    elif kind == "opset 30":
        proto.opset_import[0].version = 30
    elif kind == "tensor produced twice":
        proto.graph.node[1].output[0] = "a"
    elif kind == "wrong output shape":
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    return proto


@pytest.mark.parametrize("kind", ["duplicate initializer", "no opset", "opset 30",
                                  "tensor produced twice", "wrong output shape"])  # fmt: skip
def test_invalid_models_are_rejected_up_front(folder, capsys, kind):
    onnx.save(_invalid(kind), folder / "bad.onnx")
    for command in (["analyze", str(folder / "bad.onnx")],
                    ["prune", str(folder / "bad.onnx"), "-o", str(folder / "o.onnx"),
                     "--ratio", "0.5"]):  # fmt: skip
        err = _clean_failure(command, folder, capsys)
        assert "verification" not in err and "custom-op" not in err


def test_a_proto_without_its_external_data_needs_its_folder(tmp_path):
    from test_file_safety import _external

    import onnxprune
    from onnxprune.errors import UsageError

    path = _external(tmp_path)
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(UsageError, match="external data that was not loaded"):
        onnxprune.prune(proto, ratio=0.5)
    result = onnxprune.prune(proto, ratio=0.5, base_dir=tmp_path)  # read from its folder
    assert result.verification.passed and result.plan.removed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from onnxprune.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist"):
        onnxprune.prune(proto, ratio=0.5, base_dir=elsewhere)  # never read from elsewhere


@pytest.mark.parametrize("kind", ["absolute", "parent folder", "short file"])
def test_external_data_outside_the_folder_or_short_is_refused(tmp_path, capsys, kind):
    from test_file_safety import _external

    inner = tmp_path / "inner"
    inner.mkdir()
    path = _external(inner)
    proto = onnx.load(path, load_external_data=False)
    data = inner / "model.onnx.data"
    if kind == "short file":
        data.write_bytes(data.read_bytes()[:10])
    else:
        secret = tmp_path / "secret.bin"
        secret.write_bytes(data.read_bytes())
        location = str(secret) if kind == "absolute" else "../secret.bin"
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(proto, path)
    for command in (["analyze", str(path)],
                    ["prune", str(path), "-o", str(inner / "o.onnx"), "--ratio", "0.5"]):
        _clean_failure(command, inner, capsys)


def test_a_hugging_face_snapshot_of_links_into_blobs_prunes(tmp_path):
    """snapshots/<rev>/model.onnx and its .data are links into ../../blobs/ (the hub cache);
    onnxruntime reads them, and so does onnxprune, from the targets."""
    from test_file_safety import _external

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    path = _external(blobs)
    path.rename(blobs / "modelhash")
    (blobs / "model.onnx.data").rename(blobs / "datahash")
    (snapshot / "model.onnx").symlink_to("../../blobs/modelhash")
    (snapshot / "model.onnx.data").symlink_to("../../blobs/datahash")
    out = tmp_path / "out.onnx"
    assert main(["prune", str(snapshot / "model.onnx"), "-o", str(out), "--ratio", "0.5"]) == 0
    assert out.exists() and (tmp_path / "out.onnx.data").exists()


def test_hard_linked_data_is_refused_cleanly(tmp_path, capsys):
    from test_file_safety import _external

    path = _external(tmp_path)
    os.link(tmp_path / "model.onnx.data", tmp_path / "elsewhere.bin")
    err = _clean_failure(["analyze", str(path)], tmp_path, capsys)
    assert "hard links" in err


def test_a_rank_0_bool_input_gets_a_feed_that_runs(tmp_path):
    """An If condition fed from outside: a bool scalar."""
    from onnx import TensorProto, helper

    import onnxprune

    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = onnxprune.prune(proto, ratio=0)
    assert result.verification.passed


@pytest.mark.parametrize("options", [
    {"ratio": "0.5"}, {"ratio": True}, {"target_macs": [0.5]}, {"ratio": 0.5, "inputs": {}},
    {"ratio": 0.5, "inputs": [1, 2]}, {"plan": 3}, {"ratio": 0.5, "allocation": "best"},
    {"ratio": 0.5, "round_to": 2.5}, {"ratio": 0.5, "calibration_random": -1},
])  # fmt: skip
def test_wrong_api_argument_types_are_usage_errors(options):
    import onnxprune
    from onnxprune.errors import UsageError

    with pytest.raises(UsageError):
        onnxprune.prune(small_model(), **options)
    with pytest.raises(UsageError, match="model must be"):
        onnxprune.prune(42, ratio=0.5)


def test_a_string_exclude_is_one_pattern():
    import onnxprune

    result = onnxprune.prune(small_model(), ratio=0.5, exclude="c1")
    assert not result.plan.removed  # the only group is produced by c1


def test_an_empty_output_name_is_refused(folder, capsys):
    _clean_failure(["prune", str(folder / "m.onnx"), "-o", "", "--ratio", "0.5"], folder, capsys)


def test_fully_dynamic_inputs_ask_for_dims(folder, capsys):
    """Every axis symbolic, the channel axis included: no candidate size fits the weights."""
    proto = small_model()
    for d, name in zip(proto.graph.input[0].type.tensor_type.shape.dim, "nchw", strict=True):
        d.dim_param = name
    onnx.save(proto, folder / "dynamic.onnx")
    err = _clean_failure(["prune", str(folder / "dynamic.onnx"), "-o", str(folder / "o.onnx"),
                          "--ratio", "0.5"], folder, capsys)  # fmt: skip
    assert "--dim" in err
    assert main(["prune", str(folder / "dynamic.onnx"), "-o", str(folder / "o.onnx"),
                 "--ratio", "0.5", "--dim", "x=1,3,2,2"]) == 0  # fmt: skip


def test_bench_of_a_model_without_contractions(folder, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              folder / "relu.onnx")  # fmt: skip
    assert main(["bench", str(folder / "relu.onnx"), str(folder / "relu.onnx"), "--repeats",
                 "2"]) == 0  # fmt: skip
    assert "MACs unknown" in capsys.readouterr().out


def test_a_full_disk_is_one_line_and_leaves_nothing(folder, capsys, monkeypatch):
    import errno

    import onnx_ir as ir

    from onnxprune import wire

    def full(model, path, *args, **kwargs):  # half a file, then the disk is full
        with open(path, "wb") as file:
            file.write(b"\x08\x07")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ir, "save", full)
    monkeypatch.setattr(wire, "write_model", full)
    err = _clean_failure(_prune(folder, "--ratio", "0.5"), folder, capsys)
    assert "No space left" in err
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx"]


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.integers(-10, 100), st.text(max_size=4))  # fmt: skip


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--ratio", "--target-macs", "--target-params"]), value=NUMBERS,
       round_to=st.one_of(st.integers(-3, 40), st.text(max_size=3)),
       min_channels=st.integers(-3, 100))  # fmt: skip
def test_random_option_values(tmp_path_factory, capsys, option, value, round_to, min_channels):
    folder = tmp_path_factory.mktemp("options")
    onnx.save(small_model(), folder / "m.onnx")
    before = (folder / "m.onnx").read_bytes()
    args = ["prune", str(folder / "m.onnx"), "-o", str(folder / "o.onnx"), option, str(value),
            "--round-to", str(round_to), "--min-channels", str(min_channels)]  # fmt: skip
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own refusal of a non-number: usage + one line
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, (args, code, err)
    assert (folder / "m.onnx").read_bytes() == before
    assert code == 0 or not (folder / "o.onnx").exists()
