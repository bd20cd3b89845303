"""Verdict policy: fuses check results into PASS / FAIL / REVIEW with reasons a person can read.

Technical failures (network drop, camera unavailable, engine failure) are never non-compliance: they
lead to REVIEW with a retake offered. Ambiguity leads to REVIEW. FAIL needs a decided FAIL check and
no technical failure in the same session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.db.enums import Decision

POLICY_VERSION = "2026.11-1"


@dataclass(frozen=True)
class VerdictOutcome:
    """A decision with its reasons and everything needed to explain it later."""

    decision: Decision
    reasons: list[str]
    retake_offered: bool
    policy_version: str = POLICY_VERSION
    thresholds: dict[str, float | None] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "reasons": self.reasons,
            "retake_offered": self.retake_offered,
            "policy_version": self.policy_version,
            "thresholds": self.thresholds,
            "models": self.models,
        }


def decide(results: Sequence[CheckResult], required: Iterable[CheckKind]) -> VerdictOutcome:
    """Fuse the checks of one session; `required` lists kinds without which nothing can PASS."""
    reasons: list[str] = []
    thresholds: dict[str, float | None] = {}
    models: dict[str, dict[str, str]] = {}
    for r in results:
        if r.threshold is not None:
            thresholds[f"{r.kind.value}.{r.code}"] = r.threshold
        if r.model is not None:
            models[r.model.name] = r.model.to_dict()

    technical = [r for r in results if r.outcome is Outcome.TECHNICAL]
    failed = [r for r in results if r.outcome is Outcome.FAIL]
    unsure = [r for r in results if r.outcome is Outcome.INCONCLUSIVE]
    present = {r.kind for r in results if r.outcome is not Outcome.TECHNICAL}
    missing = [k for k in required if k not in present]

    reasons += [f"technical: {r.kind.value}: {r.message}" for r in technical]
    reasons += [f"fail: {r.kind.value}: {r.message}" for r in failed]
    reasons += [f"unsure: {r.kind.value}: {r.message}" for r in unsure]
    reasons += [f"missing: {k.value}: this check produced no usable result" for k in missing]

    if failed and not technical:
        decision = Decision.FAIL
    elif failed or technical or unsure or missing:
        decision = Decision.REVIEW
    else:
        decision = Decision.PASS
        reasons.append("all required checks passed: " + ", ".join(sorted(k.value for k in present)))
    return VerdictOutcome(
        decision=decision,
        reasons=reasons,
        retake_offered=bool(technical or (missing and not failed)),
        thresholds=thresholds,
        models=models,
    )
