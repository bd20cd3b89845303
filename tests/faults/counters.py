"""The fault counters (a module of their own, so the conftest and the tests share one object)."""

from __future__ import annotations

from collections import Counter

COUNTERS: Counter[str] = Counter()
# Printed even when zero: these are the figures the fault suite exists to show.
REPORTED = (
    "jobs redelivered",
    "sessions recovered",
    "orphaned worker processes",
    "jobs resumed after broker restart",
    "artifacts spooled while S3 was down",
    "duplicate verdicts",
    "evidence lost",
)
