"""The scripts in tools/ import (a renamed helper breaks them before anyone runs them), and
the demo that `make demo` runs works end to end. Modules named ``_*`` are the tools' helpers,
imported by the tools, not tools themselves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from accuracy import FIGURES

TOOLS = Path(__file__).resolve().parent.parent / "tools"


@pytest.mark.parametrize("script", sorted(p.name for p in TOOLS.glob("[!_]*.py")))
def test_every_tool_imports(script):
    spec = importlib.util.spec_from_file_location(f"tool_{script[:-3]}", TOOLS / script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(TOOLS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS))
    assert hasattr(module, "main")


def test_the_demo_prunes_the_bundled_cnn(tmp_path, capsys):
    sys.path.insert(0, str(TOOLS))
    try:
        import demo
    finally:
        sys.path.remove(str(TOOLS))
    assert demo.main(["--out", str(tmp_path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    calibrated = FIGURES["digits_cnn_calibrated_50"][0]  # the demo prunes as that test does
    assert f"{calibrated:.2%}" in printed and "passed" in printed
    assert (tmp_path / "digits_cnn.pruned.onnx").exists()
