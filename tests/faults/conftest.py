"""Fault injection on the production profile: the counters each test adds to are printed at the end."""

from __future__ import annotations

from collections import Counter

import pytest

COUNTERS: Counter[str] = Counter()
# Printed even when zero: these are the figures the fault suite exists to show.
REPORTED = (
    "jobs redelivered",
    "orphaned worker processes",
    "jobs resumed after broker restart",
    "artifacts spooled while S3 was down",
    "duplicate verdicts",
    "evidence lost",
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(COUNTERS.values()) and not terminalreporter.stats.get("passed"):
        return
    terminalreporter.section("kuzet fault counters")
    for name in REPORTED:
        terminalreporter.write_line(f"{name:40s} {COUNTERS.get(name, 0)}")
