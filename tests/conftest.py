"""Shared test setup: the zoo results table printed at the end of the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(os.environ.get("ONNXPRUNE_ZOO_RESULTS", "/tmp/onnxprune-zoo-results.jsonl"))


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput") and RESULTS.exists():
        RESULTS.unlink()


def record_zoo_result(row: dict) -> None:
    """Append one model's figures; the controller prints them all in the terminal summary."""
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def pytest_terminal_summary(terminalreporter):
    if not RESULTS.exists():
        return
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line]
    if not rows:
        return
    tr = terminalreporter
    tr.section("zoo: prunable share and pruning at ratio 0.5")
    tr.write_line(f"{'model':28} {'exporter':11} {'groups':>6} {'share':>6} {'params':>7} "
                  f"{'MACs':>7} {'max|diff|':>9}")
    for r in sorted(rows, key=lambda r: (r["model"], r["exporter"])):
        tr.write_line(
            f"{r['model']:28} {r['exporter']:11} {r['groups']:>6} {r['share']:>6.1%} "
            f"{r['params_kept']:>7.1%} {r['macs_kept']:>7.1%} {r['max_abs_diff']:>9.1e}"
        )
