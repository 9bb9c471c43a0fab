"""The wheel installs `passes/` as `onnxprune.passes` and works from a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (path,) = out.glob("onnxprune-*.whl")
    return path


def test_wheel_maps_passes_under_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "onnxprune/passes/shrink.py" in names
    assert "onnxprune/rules/conv.py" in names
    assert not any(n.startswith("passes/") for n in names)


def test_wheel_imports_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # The runtime dependencies come from this environment's site-packages, appended through a
    # .pth line: .pth files there (such as the editable install's finder) are not processed,
    # so `onnxprune` can only come from the wheel.
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    code = (
        "import onnxprune, onnxprune.passes as p; "
        "from onnxprune.passes import ShrinkPass, CleanupPass; "
        f"assert p.__file__.startswith({str(venv)!r}), p.__file__; print(onnxprune.__version__)"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "0.1.0"
    console = subprocess.run([venv / "bin" / "onnxprune", "--help"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert console.returncode == 0 and "analyze" in console.stdout
