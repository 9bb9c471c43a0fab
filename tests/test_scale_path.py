"""The path models over 2 GB take, on a small decoder forced through it (the inline limit
lowered): weights memory-mapped and sliced when written, costs and checks on a weightless
skeleton, sessions reading the data files in place, the verified model staged once and its
data file moved into place, nothing left behind; a wrong model on this path still fails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import tool_scripts
from onnxprune import api, oracle, sessions
from onnxprune.api import prune
from onnxprune.cli import main
from onnxprune.metrics import model_cost
from onnxprune.skeleton import skeleton


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> Path:
    """A 2-layer Llama-shaped decoder (hidden 96, 4 heads) with external data."""
    path = tmp_path_factory.mktemp("decoder") / "model.onnx"
    tool_scripts.load("make_llm").build_shaped(path, hidden=96, layers=2, heads=4,
                                               kv_heads=4, intermediate=192, vocab=256)
    return path


@pytest.fixture
def forced(tmp_path, monkeypatch) -> Path:
    """Every model counts as large; temporary copies go to a private root (returned)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv(sessions.TMP_ENV, str(root))
    monkeypatch.setenv(sessions.INLINE_ENV, "100000")
    return root


def _sessions_opened(monkeypatch) -> list[tuple[object, dict]]:
    opened: list[tuple[object, dict]] = []
    create = sessions._create

    def spy(source, options, providers):
        opened.append((source, options.get_session_config_entry(
            "session.model_external_initializers_file_folder_path")
            if _has_folder(options) else None))  # fmt: skip
        return create(source, options, providers)

    monkeypatch.setattr(sessions, "_create", spy)
    return opened


def _has_folder(options: ort.SessionOptions) -> bool:
    try:
        options.get_session_config_entry("session.model_external_initializers_file_folder_path")
    except Exception:  # noqa: BLE001 - onnxruntime raises when the key is unset
        return False
    return True


def _logits(path: Path, tokens: int = 16) -> tuple[list[str], np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.arange(tokens, dtype=np.int64).reshape(1, tokens) % 256
    return [o.name for o in session.get_outputs()], session.run(None, {"input_ids": ids})[0]


def test_large_model_prunes_in_place_and_moves_its_staged_data(decoder, forced, tmp_path,
                                                                monkeypatch):  # fmt: skip
    opened = _sessions_opened(monkeypatch)
    staged_data: list[tuple[Path, int]] = []
    stage = sessions.staged

    def spy(model):
        result = stage(model)
        staged_data.append((result.data, result.data.stat().st_ino))
        return result

    monkeypatch.setattr(oracle, "staged", spy)
    out = tmp_path / "out"
    out.mkdir()
    pruned = out / "p.onnx"
    assert main(["prune", str(decoder), "-o", str(pruned), "--ratio", "0.25"]) == 0
    # the input's weights were read where they lie; the staged copy was read where it lay
    folders = {folder for _, folder in opened if folder}
    assert str(decoder.parent) in folders
    assert len(staged_data) == 1 and str(staged_data[0][0].parent) in folders
    # the staged data file became the output's: moved, not copied
    assert (out / "p.onnx.data").stat().st_ino == staged_data[0][1]
    assert not staged_data[0][0].exists()
    assert list(forced.iterdir()) == []  # nothing left in the temp root
    assert sorted(p.name for p in out.iterdir()) == ["p.onnx", "p.onnx.data"]
    names, before = _logits(decoder)
    names_after, after = _logits(pruned)
    assert names_after == names and after.shape == before.shape
    assert main(["verify", str(decoder), str(pruned)]) == 0
    assert list(forced.iterdir()) == []


def test_rewrite_reads_mapped_weights_only_when_written(decoder, forced, tmp_path):
    result = prune(decoder, ratio=0.25, verify=False)
    tensors = {v.name: v.const_value for v in result.model.graph.initializers.values()}
    sliced = {n for n, t in tensors.items() if isinstance(t, ir.LazyTensor)}
    untouched = {n for n, t in tensors.items() if isinstance(t, ir.ExternalTensor)}
    assert sliced and untouched  # q/k/v/o, gate/up/down sliced; the embedding untouched
    assert {n for n in sliced if n.endswith(("q_proj", "gate_proj"))} == {
        f"layers.{i}.{p}" for i in range(2) for p in ("q_proj", "gate_proj")}  # fmt: skip
    out = tmp_path / "p.onnx"
    result.save(out)
    assert (tmp_path / "p.onnx.data").is_file()
    assert _logits(out)[1].shape == _logits(decoder)[1].shape


def test_costs_are_counted_on_a_skeleton_without_weight_bytes(decoder):
    model = ir.load(decoder)
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values())
    bare = skeleton(model)
    assert bare.ByteSize() < weights / 20
    assert all(t.data_location == onnx.TensorProto.EXTERNAL or np.prod(t.dims) <= 4096
               for t in bare.graph.initializer)  # fmt: skip
    full = onnx.load(str(decoder))
    dims = {"input_ids": [1, 16]}
    assert model_cost(model, dims) == model_cost(full, dims)
    assert model_cost(model, dims).macs > 0


def test_a_wrong_model_on_the_large_path_fails_and_leaves_nothing(decoder, forced, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    shrunk = api.rewrite

    def swapped_columns(original, plan, **options):
        model = shrunk(original, plan, **options)
        value = model.graph.initializers["layers.1.down_proj"]
        array = value.const_value.numpy().copy()
        array[:, [0, 1]] = array[:, [1, 0]]
        value.const_value = ir.Tensor(array, name=value.name)
        return model

    monkeypatch.setattr(api, "rewrite", swapped_columns)
    out = tmp_path / "p.onnx"
    assert main(["prune", str(decoder), "-o", str(out), "--ratio", "0.25"]) == 1
    assert not out.exists() and not (tmp_path / "p.onnx.data").exists()
    assert list(forced.iterdir()) == []
    assert not any(p.name.startswith(sessions.TEMP_PREFIX) for p in tmp_path.iterdir())


def test_without_verification_a_large_model_is_not_run(decoder, forced, tmp_path, monkeypatch):
    opened = _sessions_opened(monkeypatch)
    out = tmp_path / "p.onnx"
    assert main(["prune", str(decoder), "-o", str(out), "--ratio", "0.25", "--no-verify"]) == 0
    assert opened == []  # sizes taken from the first candidates: no session at all
    assert os.path.getsize(tmp_path / "p.onnx.data") > 0
    assert main(["verify", str(decoder), str(out)]) == 0
