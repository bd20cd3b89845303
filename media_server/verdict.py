"""The one verdict path: policy, signed manifest, writer and announcement.

Every verdict — a check-in, a breath test, a retest the episode clock books, a missed window — is decided
by `decide`, written by `write_verdict` (results, a signed manifest stored as evidence, the verdict row and
its audit entry in one transaction) and announced by `announce` (webhooks).

Policy. Technical failures (network drop, camera unavailable, engine failure) are never non-compliance:
they lead to REVIEW with a retake offered. Ambiguity leads to REVIEW. FAIL needs a decided FAIL check, no
technical failure and nothing unsure in the same session, and a finding about the person's conduct (a
positive breath reading) must be attributable to them: it is FAIL only when the face check PASSED.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from identity.checks import CheckKind, CheckResult, Outcome
from identity.liveness.config import LivenessSettings
from media_server.artifacts import store_artifact
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, VerdictOrigin
from media_server.db.models import Artifact, CheckResultRecord, Verdict
from media_server.db.types import utcnow
from media_server.services import Services
from media_server.webhooks import WebhookEvent, verdict_event, violation_event

POLICY_VERSION = "2026.12-1"

# Results of these kinds add a note to the verdict but never decide it on their own.
ADVISORY = frozenset({CheckKind.LOCATION})
# A result whose details carry this key set to True is a note too (e.g. digits of a person not enrolled).
ADVISORY_DETAIL = "advisory"
# Findings about the person's conduct (not about who they are): FAIL only when identity is established.
NEEDS_ATTRIBUTION = frozenset({CheckKind.BREATH_READING})
# The check that establishes who took the test.
ATTRIBUTION = CheckKind.FACE


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


def _attributed(failed: Sequence[CheckResult], results: Sequence[CheckResult]) -> bool:
    """True unless a conduct finding FAILs while the face check did not PASS (or is absent)."""
    if not any(r.kind in NEEDS_ATTRIBUTION for r in failed):
        return True
    identity = [r for r in results if r.kind is ATTRIBUTION]
    return bool(identity) and all(r.outcome is Outcome.PASS for r in identity)


def advisory_kinds(liveness: LivenessSettings) -> frozenset[CheckKind]:
    """ADVISORY, plus lip/speech sync unless liveness.av_sync_decides (it does not separate own from
    foreign speech on real talking heads: benchmarks/liveness_clips.py)."""
    return ADVISORY if liveness.av_sync_decides else ADVISORY | {CheckKind.AV_SYNC}


def _is_note(result: CheckResult, advisory: frozenset[CheckKind]) -> bool:
    return result.kind in advisory or result.details.get(ADVISORY_DETAIL) is True


def decide(
    results: Sequence[CheckResult], required: Iterable[CheckKind], advisory: frozenset[CheckKind] = ADVISORY
) -> VerdictOutcome:
    """Fuse the checks of one session; `required` lists kinds without which nothing can PASS.

    Advisory kinds (location, spoken digits; see advisory_kinds) are notes: they never change the decision.
    """
    deciding = [r for r in results if not _is_note(r, advisory)]
    reasons: list[str] = []
    thresholds: dict[str, float | None] = {}
    models: dict[str, dict[str, str]] = {}
    for r in deciding:
        if r.threshold is not None:
            thresholds[f"{r.kind.value}.{r.code}"] = r.threshold
        if r.model is not None:
            models[r.model.name] = r.model.to_dict()

    technical = [r for r in deciding if r.outcome is Outcome.TECHNICAL]
    failed = [r for r in deciding if r.outcome is Outcome.FAIL]
    unsure = [r for r in deciding if r.outcome is Outcome.INCONCLUSIVE]
    present = {r.kind for r in deciding if r.outcome is not Outcome.TECHNICAL}
    missing = [k for k in required if k not in present]
    attributed = _attributed(failed, deciding)

    reasons += [f"technical: {r.kind.value}: {r.message}" for r in technical]
    reasons += [f"fail: {r.kind.value}: {r.message}" for r in failed]
    reasons += [f"unsure: {r.kind.value}: {r.message}" for r in unsure]
    reasons += [f"missing: {k.value}: this check produced no usable result" for k in missing]
    if failed and not attributed:
        reasons.append(
            "unattributed: the finding cannot be attributed to the person because the face check "
            "did not pass; it goes to review, not to a violation"
        )

    if failed and not technical and attributed:
        decision = Decision.FAIL
    elif failed or technical or unsure or missing:
        decision = Decision.REVIEW
    else:
        decision = Decision.PASS
        reasons.append("all required checks passed: " + ", ".join(sorted(k.value for k in present)))
    reasons += [
        f"note: {r.kind.value}: {r.message}" for r in results if _is_note(r, advisory) and not r.passed
    ]
    return VerdictOutcome(
        decision=decision,
        reasons=reasons,
        retake_offered=bool(technical or (missing and not failed)),
        thresholds=thresholds,
        models=models,
    )


def manifest_bytes(
    session_id: str,
    artifacts: list[dict[str, Any]],
    results: Sequence[CheckResult],
    outcome: VerdictOutcome,
    audit_head: dict[str, Any] | None,
) -> bytes:
    """The canonical JSON the service signs: artifacts, checks, verdict and the audit head it followed."""
    manifest = {
        "session_id": session_id,
        "artifacts": artifacts,
        "checks": [r.to_dict() for r in results],
        "verdict": outcome.to_dict(),
        "audit_head": audit_head,
        "created_at": utcnow().isoformat(),
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()


def write_verdict_if(
    services: Services,
    session_id: str,
    results: list[CheckResult],
    required: list[CheckKind],
    guard: Callable[[Session], bool] | None = None,
    *,
    actor: str = "system",
    action: str = "verdict_written",
    origin: VerdictOrigin = VerdictOrigin.ANALYSIS,
) -> tuple[VerdictOutcome, str] | None:
    """Decide, sign and store the manifest, then write results + verdict + audit in one transaction.

    `guard(db)` runs first inside that transaction (e.g. a conditional status change); when it returns
    False nothing is written and the result is None. Blocking: call in a thread.
    """
    outcome = decide(results, required, advisory_kinds(services.settings.liveness))
    with services.sessions() as db:
        artifacts = db.scalars(
            select(Artifact).where(Artifact.session_id == session_id).order_by(Artifact.created_at)
        ).all()
        artifact_list = [
            {"kind": a.kind.value, "key": a.key, "sha256": a.sha256, "size": a.size} for a in artifacts
        ]
        head = audit.head(db)
    body = manifest_bytes(
        session_id,
        artifact_list,
        results,
        outcome,
        {"id": head.id, "row_hash": head.row_hash} if head else None,
    )
    signature = services.signing_key.sign(body)
    ref = store_artifact(
        services,
        session_id,
        ArtifactKind.OTHER,
        "application/json",
        {"what": "verdict_manifest", "ed25519_signature_b64": base64.b64encode(signature).decode()},
        data=body,
    )
    try:
        with services.sessions.begin() as db:
            if guard is not None and not guard(db):
                db.rollback()
                return None
            for r in results:
                db.add(CheckResultRecord.from_check(session_id, r))
            verdict = Verdict(
                session_id=session_id,
                decision=outcome.decision,
                reasons=outcome.reasons,
                retake_offered=outcome.retake_offered,
                policy_version=outcome.policy_version,
                thresholds=outcome.thresholds,
                models=outcome.models,
                manifest_sha256=hashlib.sha256(body).hexdigest(),
                origin=origin,
            )
            db.add(verdict)
            db.flush()
            audit.append(
                db,
                actor=actor,
                action=action,
                subject_type="session",
                subject_id=session_id,
                details={
                    "verdict_id": verdict.id,
                    "decision": outcome.decision.value,
                    "manifest_sha256": verdict.manifest_sha256,
                    "manifest_artifact": ref.artifact_id,
                },
            )
            verdict_id = verdict.id
    except DbIntegrityError:
        # UNIQUE(session_id, origin): another node or a redelivered job wrote this session's verdict of
        # this origin first (both passed the guard; the constraint decides).
        return None
    services.metrics.verdicts.labels(outcome.decision.value).inc()
    return outcome, verdict_id


def not_judged_yet(session_id: str) -> Callable[[Session], bool]:
    """Guard for `write_verdict_if`: the session has no verdict yet."""

    def guard(db: Session) -> bool:
        return db.scalar(select(Verdict.id).where(Verdict.session_id == session_id).limit(1)) is None

    return guard


def write_verdict(
    services: Services,
    session_id: str,
    results: list[CheckResult],
    required: list[CheckKind],
    origin: VerdictOrigin = VerdictOrigin.ANALYSIS,
) -> tuple[VerdictOutcome, str]:
    """`write_verdict_if` without a guard (blocking; call in a thread).

    Idempotent by session: when the session was already judged (a redelivered job, a second node), the
    verdict it has is returned and nothing is written twice.
    """
    written = write_verdict_if(
        services, session_id, results, required, not_judged_yet(session_id), origin=origin
    )
    if written is not None:
        return written
    existing = stored_verdict(services, session_id)
    if existing is None:
        raise RuntimeError(f"verdict for session {session_id} was neither written nor found")
    return existing


def stored_verdict(services: Services, session_id: str) -> tuple[VerdictOutcome, str] | None:
    """The verdict a session already has, as written.

    A session has one in practice: the database allows one per origin, and the episode clock books its
    results on a session of its own (`breath.clock.tick_episodes`), never beside an analysis verdict.
    """
    with services.sessions() as db:
        row = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).first()
        if row is None:
            return None
        return (
            VerdictOutcome(
                decision=row.decision,
                reasons=list(row.reasons),
                retake_offered=row.retake_offered,
                policy_version=row.policy_version,
                thresholds=dict(row.thresholds),
                models=dict(row.models),
            ),
            row.id,
        )


def verdict_events(
    session_id: str, person_id: str, kind: str, outcome: VerdictOutcome, verdict_id: str, source: str
) -> list[WebhookEvent]:
    """The webhook events of a verdict: `verdict`, and `violation` when it is a FAIL."""
    events = [
        verdict_event(
            session_id=session_id,
            person_id=person_id,
            kind=kind,
            decision=outcome.decision.value,
            reasons=outcome.reasons,
            verdict_id=verdict_id,
            retake_offered=outcome.retake_offered,
        )
    ]
    if outcome.decision is Decision.FAIL:
        events.append(
            violation_event(
                session_id=session_id,
                person_id=person_id,
                kind=kind,
                reason="; ".join(outcome.reasons),
                verdict_id=verdict_id,
                source=source,
            )
        )
    return events


def announce(
    services: Services,
    session_id: str,
    person_id: str,
    kind: str,
    outcome: VerdictOutcome,
    verdict_id: str,
    *,
    source: str = "verdict",
) -> None:
    """Submit a verdict's webhook events (non-blocking; call on the event loop)."""
    for event in verdict_events(session_id, person_id, kind, outcome, verdict_id, source):
        services.notifier.submit(event)
