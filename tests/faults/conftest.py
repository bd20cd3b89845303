"""Fault injection on the production profile: the counters each test adds to are printed at the end."""

from __future__ import annotations

import pytest

from tests.faults.counters import COUNTERS, REPORTED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(COUNTERS.values()) and not terminalreporter.stats.get("passed"):
        return
    terminalreporter.section("kuzet fault counters")
    for name in REPORTED:
        terminalreporter.write_line(f"{name:40s} {COUNTERS.get(name, 0)}")
