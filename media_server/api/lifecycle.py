"""A person's life cycle and data protection: end of supervision, erasure on request and its proof, the
retention report, an officer's link resend, and webhook dead letters (admin, officer, auditor)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from media_server.api.deps import AdminDep, AuditorDep, OfficerDep, ServicesDep
from media_server.db.types import utcnow
from media_server.dead_letters import (
    NotRetryable,
    dead_letter_view,
    list_dead_letters,
    retry_dead_letter,
)
from media_server.erasure import erase_person, verify_erasure
from media_server.errors import Conflict, NotFoundError
from media_server.lifecycle import end_supervision
from media_server.links import CHECKIN_PATH, deliver_link, resend_link
from media_server.retention import retention_report

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])

REASON_MAX_CHARS = 2000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EndSupervisionIn(_In):
    ended_on: date = Field(
        description="The order's end date (not in the future); the retention clock starts."
    )
    reason: str = Field("order ended", min_length=1, max_length=REASON_MAX_CHARS)


@router.post("/persons/{person_id}/end-supervision")
def post_end_supervision(
    person_id: str, body: EndSupervisionIn, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Record the end of supervision: devices, schedules and open links are revoked at once (audited)."""
    with services.sessions() as db:
        return end_supervision(
            db,
            person_id,
            body.ended_on,
            actor=who.actor,
            reason=body.reason,
            settings=services.settings.retention,
        )


class EraseIn(_In):
    reason: str = Field(
        min_length=3, max_length=REASON_MAX_CHARS, description="Why (e.g. a data subject request)."
    )


@router.post("/persons/{person_id}/erase")
def post_erase(person_id: str, body: EraseIn, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Erase a person on request: revoke everything, remove personal data and free evidence; the proof."""
    with services.sessions() as db:
        try:
            proof = erase_person(
                db, services.store, person_id, utcnow(), actor=who.actor, reason=body.reason, on_request=True
            )
        except LookupError as exc:
            raise NotFoundError("no such person") from exc
    return {
        "person_id": proof.person_id,
        "erasure_id": proof.erasure_id,
        "erased_at": proof.erased_at.isoformat(),
        "counts": proof.counts,
        "proof_sha256": proof.proof_sha256,
        "deleted_keys": proof.deleted_keys,
        "retained": [
            {
                "key": r.key,
                "reason": r.reason,
                "retain_until": r.retain_until.isoformat() if r.retain_until else None,
            }
            for r in proof.retained
        ],
    }


@router.get("/erasures/{erasure_id}/verify")
def get_verify_erasure(erasure_id: str, services: ServicesDep, who: AuditorDep) -> dict[str, Any]:
    """Recompute an erasure's proof and check the store and database still agree with it."""
    with services.sessions() as db:
        try:
            check = verify_erasure(db, services.store, erasure_id)
        except LookupError as exc:
            raise NotFoundError("no such erasure") from exc
    return {
        "erasure_id": check.erasure_id,
        "person_id": check.person_id,
        "ok": check.ok,
        "proof_sha256": check.proof_sha256,
        "recomputed_sha256": check.recomputed_sha256,
        "deleted_keys": check.deleted_keys,
        "problems": check.problems,
    }


@router.get("/retention/report")
def get_retention_report(services: ServicesDep, who: AuditorDep) -> dict[str, Any]:
    """What is held per person and why (counts and bytes; no personal data beyond the case reference)."""
    with services.sessions() as db:
        return retention_report(db, services.settings.retention, utcnow())


@router.post("/sessions/{session_id}/resend-link", status_code=201)
async def post_resend_link(session_id: str, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Revoke the session's link and issue a fresh one (shown once; also sent to the gateway)."""
    issued = await asyncio.to_thread(resend_link, services, session_id, actor=who.actor)
    await deliver_link(services, issued)
    return {
        "session_id": issued.session_id,
        "replaces": session_id,
        "token": issued.token,
        "url": f"{CHECKIN_PATH}{issued.token}",
        "window_start": issued.window_start.isoformat(),
        "window_end": issued.window_end.isoformat(),
    }


@router.get("/webhooks/dead-letters")
def get_dead_letters(services: ServicesDep, who: AdminDep, include_resolved: bool = False) -> dict[str, Any]:
    """Webhook deliveries that failed for good (oldest first), with their stored body."""
    with services.sessions() as db:
        rows = list_dead_letters(db, include_resolved=include_resolved)
        return {"items": [dead_letter_view(r) for r in rows]}


@router.post("/webhooks/dead-letters/{letter_id}/retry")
async def post_retry_dead_letter(letter_id: str, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Send a dead letter again to its URL; resolved when it is delivered."""
    try:
        outcome = await retry_dead_letter(services.sessions, services.notifier, letter_id, actor=who.actor)
    except NotRetryable as exc:
        raise Conflict(str(exc)) from exc
    if outcome is None:
        raise NotFoundError("no such dead letter")
    return {
        "delivered": outcome.delivered,
        "status": outcome.status,
        "error": outcome.error,
        **outcome.letter,
    }
