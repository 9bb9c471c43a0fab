"""Strict mode (``make test``): a skipped test or module fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "test_skip.py": "import pytest\n\ndef test_a():\n    pytest.skip('no extra')\n",
    "test_module.py": "import pytest\n\npytest.importorskip('no_such_extra_xyz')\n\n"
                      "def test_b():\n    pass\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_skip_fails_in_strict_mode_and_only_there(tmp_path, name):
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / name).write_text(CASES[name])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
               "no:xdist", str(tmp_path)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ONNXPRUNE_STRICT"}
    relaxed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert relaxed.returncode in (0, 5) and "1 skipped" in relaxed.stdout  # 5: none ran
    strict = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                            env=env | {"ONNXPRUNE_STRICT": "1"})  # fmt: skip
    assert strict.returncode != 0 and "skipped in strict mode" in strict.stdout
