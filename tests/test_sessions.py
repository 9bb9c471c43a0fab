"""Sessions own their files: temporary copies for onnxruntime (models past the inline limit,
forced here by lowering it) are gone after every command, on success, failure and interrupt;
too little free space fails up front."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from graphs import conv, model, weight
from onnxprune import sessions
from onnxprune.cli import main


def cnn(width: int = 8, seed: int = 0) -> onnx.ModelProto:
    return model([conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["a"], ["r"], name="relu"),
                  conv("c2", "r", "w2", "b2", "y")], {"x": ["n", 3, "h", "w"]},
                 {"y": ["n", 2, "h", "w"]},
                 {"w1": weight(width, 3, 3, 3, seed=seed), "b1": weight(width, seed=seed + 1),
                  "w2": weight(2, width, 1, 1, seed=seed + 2),
                  "b2": weight(2, seed=seed + 3)})  # fmt: skip


@pytest.fixture
def forced(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A model file and a private temp root; every in-memory model goes through files."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv(sessions.TMP_ENV, str(root))
    monkeypatch.setenv(sessions.INLINE_ENV, "1")
    path = tmp_path / "m.onnx"
    onnx.save(cnn(), path)
    return path, root


def _copies_made(monkeypatch) -> list[str]:
    made: list[str] = []
    create = sessions._create

    def spy(source, options, providers):
        if isinstance(source, str) and Path(source).name == "model.onnx":
            made.append(source)
        return create(source, options, providers)

    monkeypatch.setattr(sessions, "_create", spy)
    return made


def test_every_command_leaves_the_temp_folder_as_it_found_it(forced, tmp_path, monkeypatch):
    path, root = forced
    made = _copies_made(monkeypatch)
    small = tmp_path / "small.onnx"
    assert main(["prune", str(path), "-o", str(small), "--ratio", "0.5", "--random", "4"]) == 0
    assert made and all(Path(m).is_relative_to(root) for m in made)  # the copies were made
    assert main(["verify", str(path), str(small)]) == 0
    assert main(["bench", str(path), str(small), "--repeats", "2"]) == 0
    other = tmp_path / "other.onnx"
    onnx.save(cnn(seed=7), other)
    assert main(["verify", str(path), str(other)]) == 1  # a verification that really fails
    assert list(root.iterdir()) == []


def test_tmp_dir_option_wins_and_an_interrupt_removes_the_copy(forced, tmp_path, monkeypatch):
    path, root = forced
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    seen: list[list[Path]] = []
    real = ort.InferenceSession

    def interrupted(source, *args, **kwargs):
        if isinstance(source, str) and Path(source).is_relative_to(chosen):
            seen.append(list(Path(source).parent.iterdir()))  # the copy exists while opening
            raise KeyboardInterrupt
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", interrupted)
    out = tmp_path / "small.onnx"
    code = main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--tmp-dir", str(chosen)])
    assert code == 130 and seen and seen[0]
    assert list(chosen.iterdir()) == [] and list(root.iterdir()) == [] and not out.exists()


def test_too_little_free_space_fails_up_front_naming_folder_and_bytes(forced, tmp_path,
                                                                     monkeypatch, capsys):  # fmt: skip
    path, root = forced
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sessions.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))
    out = tmp_path / "small.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"'{root}'" in err and "bytes needed" in err and "Traceback" not in err
    assert not out.exists() and list(root.iterdir()) == []


def test_a_session_from_a_removed_copy_still_runs(forced):
    import onnx_ir as ir

    path, root = forced
    session = sessions.open_session(ir.load(path))
    assert list(root.iterdir()) == []
    x = np.ones((1, 3, 5, 5), np.float32)
    assert session.run(None, {"x": x})[0].shape == (1, 2, 5, 5)


def test_an_in_memory_model_hands_its_weights_over_without_serializing_them(tmp_path):
    """Weights of more than ``skeleton.SMALL`` elements reach onnxruntime as OrtValues over the
    model's own arrays (the session keeps them; onnxruntime 1.32 still copies them into
    buffers of its own); the session computes what one opened from the file does (bfloat16
    weights, which stay in the bytes: tests/test_half_precision.py)."""
    from onnxprune.model_io import load_model

    path = tmp_path / "m.onnx"
    onnx.save(cnn(width=256), path)
    loaded = load_model(path)
    session = sessions.open_session(loaded)
    handed = session._onnxprune_weights
    w1 = loaded.graph.initializers["w1"].const_value.numpy()
    assert len(handed) == 1 and np.shares_memory(handed[0], w1)  # w2 has 512 elements
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    expected = sessions.open_session(str(path)).run(None, {"x": x})  # onnxruntime reads the file
    assert np.array_equal(session.run(None, {"x": x})[0], expected[0])


def test_a_files_size_counts_its_external_data_read_from_the_wire_format(tmp_path):
    """``is_large`` of a path reads the external-data locations by walking the protobuf
    fields (``wire``), never parsing the weights; the same locations onnx finds, and a
    file that is not a protobuf message is left to onnxruntime to report."""
    from onnxprune.wire import WireError, external_data_locations

    path = tmp_path / "m.onnx"
    onnx.save(cnn(width=64), path, save_as_external_data=True, location="w.bin",
              size_threshold=1024)  # fmt: skip
    assert external_data_locations(path) == {"w.bin"}
    total = path.stat().st_size + (tmp_path / "w.bin").stat().st_size
    assert sessions.tensor_bytes(path) == total
    inline = tmp_path / "inline.onnx"
    onnx.save(cnn(width=64), inline)
    assert external_data_locations(inline) == set()
    assert sessions.tensor_bytes(inline) == inline.stat().st_size
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # graph field, length past the end
    with pytest.raises(WireError):
        external_data_locations(garbage)
    assert sessions.tensor_bytes(garbage) == garbage.stat().st_size


def test_an_oracle_session_feeds_the_weights_as_inputs_from_the_models_arrays(tmp_path):
    """A session without graph optimisations or prepacking (the oracle's) takes the large
    weights as graph inputs fed from the model's own arrays on every run (onnxruntime copies
    weights handed over as initializers): only the model's inputs are listed, and it computes
    what a session with the weights as initializers does."""
    from onnxprune.model_io import load_model

    path = tmp_path / "m.onnx"
    onnx.save(cnn(width=256), path)
    loaded = load_model(path)
    fed = sessions.open_session(loaded, prepack=False)
    assert isinstance(fed, sessions.FedSession)
    assert [i.name for i in fed.get_inputs()] == ["x"]
    w1 = loaded.graph.initializers["w1"].const_value.numpy()
    assert len(fed._onnxprune_weights) == 1 and np.shares_memory(fed._onnxprune_weights[0], w1)
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    plain = sessions.open_session(loaded)
    assert not isinstance(plain, sessions.FedSession)
    assert np.array_equal(fed.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])

