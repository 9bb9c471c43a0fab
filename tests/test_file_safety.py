"""What the tool does to files: never an input, never through a planted link, never a device
or folder, nothing half-written, permissions from the umask; destinations checked before
any work (issue: hardening)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import onnx
import pytest
from test_model_io import small_model

from onnxprune.cli import main


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink()}  # fmt: skip


def _external(folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    onnx.save(small_model(), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{name}.data", size_threshold=0)  # fmt: skip
    return path


def _fails_cleanly(args: list[str], capsys, code: int = 2) -> str:
    assert main(args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_link_planted_at_the_data_destination_is_refused(tmp_path, capsys):
    path = _external(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out.onnx.data").symlink_to(victim)
    before = _digest(tmp_path)
    err = _fails_cleanly(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--ratio",
                          "0.5"], capsys)  # fmt: skip
    assert "not a regular file" in err
    assert _digest(tmp_path) == before and victim.read_text() == "keep me"
    assert not (tmp_path / "out.onnx").exists()


def test_no_predictable_temp_name_and_no_leftovers(tmp_path):
    path = _external(tmp_path)
    (tmp_path / ".out.onnx.data.tmp").symlink_to(tmp_path / "victim.txt")  # the old name
    assert main(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5"]) == 0
    assert not (tmp_path / "victim.txt").exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".out.onnx.data.tmp", "model.onnx", "model.onnx.data", "out.onnx",
                     "out.onnx.data"]  # fmt: skip
    assert not (tmp_path / "out.onnx.data").is_symlink()


def test_the_output_never_replaces_the_inputs_external_data(tmp_path, capsys):
    path = _external(tmp_path)
    renamed = tmp_path / "model_fp32.onnx"  # still reads model.onnx.data
    path.rename(renamed)
    before = _digest(tmp_path)
    for out in (tmp_path / "model.onnx", tmp_path / "model.onnx.data"):
        err = _fails_cleanly(["prune", str(renamed), "-o", str(out), "--ratio", "0.5"], capsys)
        assert "which the input model reads" in err
    assert _digest(tmp_path) == before


@pytest.mark.parametrize("kind", ["fifo", "folder", "below a file", "missing folder"])
def test_outputs_that_are_not_files_are_refused_before_any_work(tmp_path, capsys, kind):
    path = tmp_path / "m.onnx"
    onnx.save(small_model(), path)
    out = tmp_path / "out.onnx"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "folder":
        out.mkdir()
    elif kind == "below a file":
        out = path / "out.onnx"
    else:
        out = tmp_path / "nowhere" / "out.onnx"
    before = _digest(tmp_path)
    _fails_cleanly(["prune", str(path), "-o", str(out), "--ratio", "0.5"], capsys)
    assert _digest(tmp_path) == before
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(out).st_mode)


def test_plan_and_report_destinations_are_checked_before_the_model_is_written(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(small_model(), path)
    out = tmp_path / "out.onnx"
    _fails_cleanly(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--plan-out",
                    str(tmp_path / "missing" / "plan.json")], capsys)  # fmt: skip
    (tmp_path / "report").write_text("a file")
    _fails_cleanly(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--report",
                    str(tmp_path / "report")], capsys)  # fmt: skip
    assert not out.exists()


def test_written_files_take_the_umask_permissions(tmp_path):
    path = _external(tmp_path)
    out = tmp_path / "out.onnx"
    old = os.umask(0o022)
    try:
        assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5"]) == 0
    finally:
        os.umask(old)
    for written in (out, tmp_path / "out.onnx.data"):
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o644
