"""Shared test setup: strict mode (a skip is a failure) and the zoo results table.

Strict mode (``ONNXPRUNE_STRICT=1``, set by ``make test``): every test must run; a skipped
test or module (a missing extra, a helper that fails to import) fails the run, because a
green run that skipped the check it was meant to make proves nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

STRICT = os.environ.get("ONNXPRUNE_STRICT") == "1"

RESULTS = Path(os.environ.get("ONNXPRUNE_ZOO_RESULTS", "/tmp/onnxprune-zoo-results.jsonl"))


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput") and RESULTS.exists():
        RESULTS.unlink()


def _fail_skip(report, what: str) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{what} skipped in strict mode (ONNXPRUNE_STRICT=1): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result(), f"test {item.nodeid}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result(), f"module {collector.nodeid}")


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
