"""The review and audit JSON API: the queue, session evidence, reviewer decisions, the audit log, packages.

The same roles as the workstation pages: reviewers, officers and admins see evidence; only a reviewer
decides; auditors and admins read and verify the audit log. Every evidence view, decision and export
is written to the audit log.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from media_server.api.deps import AuditorDep, DeciderDep, ReviewerDep, ServicesDep
from media_server.api.workstation import MIN_COMMENT_CHARS, flagged_sessions, record_review, stream_artifact
from media_server.db import audit
from media_server.db.enums import Decision
from media_server.db.models import (
    Artifact,
    AuditEntry,
    CheckResultRecord,
    CheckSession,
    Person,
    Review,
    User,
    Verdict,
)
from media_server.errors import BadInput, NotFoundError
from media_server.package import iso, review_view, verdict_view

router = APIRouter(prefix="/api/v1", tags=["reviews"])

AUDIT_PAGE_DEFAULT = 100
AUDIT_PAGE_MAX = 1000
MAX_COMMENT_CHARS = 4000
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@router.get("/reviews/queue")
def review_queue(services: ServicesDep, who: ReviewerDep) -> dict[str, Any]:
    """Sessions waiting for a reviewer: latest verdict REVIEW or FAIL, not yet decided; oldest first."""
    with services.sessions() as db:
        rows = flagged_sessions(db)
    return {"items": [{**r, "created_at": iso(r["created_at"])} for r in rows]}


@router.get("/sessions/{session_id}")
def session_detail(session_id: str, services: ServicesDep, who: ReviewerDep) -> dict[str, Any]:
    """One session's evidence: checks (score, threshold, model), verdicts, artifact metadata, reviews.

    Written to the audit log as `evidence_viewed`. Artifact bytes are at each artifact's `url`.
    """
    with services.sessions.begin() as db:
        s = db.get(CheckSession, session_id)
        if s is None:
            raise NotFoundError("no such session")
        person = db.get(Person, s.person_id)
        verdicts = db.scalars(
            select(Verdict).where(Verdict.session_id == s.id).order_by(Verdict.created_at, Verdict.id)
        ).all()
        checks = db.scalars(
            select(CheckResultRecord)
            .where(CheckResultRecord.session_id == s.id)
            .order_by(CheckResultRecord.created_at, CheckResultRecord.id)
        ).all()
        artifacts = db.scalars(
            select(Artifact).where(Artifact.session_id == s.id).order_by(Artifact.created_at, Artifact.id)
        ).all()
        reviews = db.execute(
            select(Review, User.username)
            .join(User, Review.reviewer_id == User.id)
            .where(Review.session_id == s.id)
            .order_by(Review.created_at, Review.id)
        ).all()
        audit.append(
            db,
            actor=who.actor,
            action="evidence_viewed",
            subject_type="session",
            subject_id=s.id,
            details={"artifacts": [a.id for a in artifacts], "via": "api"},
        )
        return {
            "session": {
                "id": s.id,
                "person_id": s.person_id,
                "kind": s.kind.value,
                "status": s.status.value,
                "window_start": iso(s.window_start),
                "window_end": iso(s.window_end),
                "started_at": iso(s.started_at),
                "ended_at": iso(s.ended_at),
                "location": s.location,
                "challenge": s.challenge,
            },
            "person": None
            if person is None
            else {
                "id": person.id,
                "external_ref": person.external_ref,
                "display_name": person.display_name,
                "erased": person.erased_at is not None,
            },
            "verdict": verdict_view(verdicts[-1]) if verdicts else None,
            "verdicts": [verdict_view(v) for v in verdicts],
            "checks": [
                {"id": c.id, "created_at": iso(c.created_at), **c.to_check().to_dict()} for c in checks
            ],
            "artifacts": [
                {
                    "id": a.id,
                    "kind": a.kind.value,
                    "content_type": a.content_type,
                    "sha256": a.sha256,
                    "size": a.size,
                    "spooled": a.spooled,
                    "meta": a.meta,
                    "created_at": iso(a.created_at),
                    "url": f"/api/v1/artifacts/{a.id}",
                }
                for a in artifacts
            ],
            "reviews": [{**review_view(r), "reviewer": name} for r, name in reviews],
        }


@router.get("/artifacts/{artifact_id}", response_model=None)
def artifact_bytes(artifact_id: str, request: Request, services: ServicesDep, who: ReviewerDep) -> Response:
    """The artifact's bytes (or one `Range` of them: 206), verified against its SHA-256; audited as viewed."""
    return stream_artifact(services, who, artifact_id, request.headers.get("range"))


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision
    comment: str = Field(max_length=MAX_COMMENT_CHARS, description="Why: required, not blank.")

    @field_validator("comment")
    @classmethod
    def _explained(cls, value: str) -> str:
        value = value.strip()
        if len(value) < MIN_COMMENT_CHARS:
            raise ValueError(f"a comment of at least {MIN_COMMENT_CHARS} characters is required")
        return value


@router.post("/sessions/{session_id}/reviews", status_code=201)
def decide(session_id: str, body: ReviewIn, services: ServicesDep, who: DeciderDep) -> dict[str, Any]:
    """Record a reviewer's decision on the session's latest verdict (audited as `review_decided`)."""
    review_id = record_review(services, who, session_id, body.decision, body.comment)
    with services.sessions() as db:
        review = db.get(Review, review_id)
        if review is None:  # written and committed just above
            raise NotFoundError("the review was not stored")
        return {"session_id": session_id, **review_view(review), "reviewer": who.username}


def _audit_row(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "ts": iso(e.ts),
        "actor": e.actor,
        "action": e.action,
        "subject_type": e.subject_type,
        "subject_id": e.subject_id,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "row_hash": e.row_hash,
    }


@router.get("/audit")
def audit_rows(
    services: ServicesDep,
    who: AuditorDep,
    after_id: Annotated[int, Query(ge=0, description="Return rows with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = AUDIT_PAGE_DEFAULT,
) -> dict[str, Any]:
    """Audit rows in chain order, a page at a time; `next_after_id` is null on the last page."""
    with services.sessions() as db:
        rows = db.scalars(
            select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id).limit(limit)
        ).all()
        out = [_audit_row(e) for e in rows]
    return {"rows": out, "next_after_id": out[-1]["id"] if len(out) == limit else None}


@router.get("/audit/verify")
def audit_verify(
    services: ServicesDep,
    who: AuditorDep,
    head_id: Annotated[int | None, Query(ge=1, description="An anchored head row id.")] = None,
    head_hash: Annotated[str | None, Query(max_length=64, description="That row's row_hash.")] = None,
) -> dict[str, Any]:
    """Recompute the whole hash chain; with an anchored head (id and hash), also detect truncation."""
    if (head_id is None) != (head_hash is None):
        raise BadInput("give both head_id and head_hash, or neither")
    expected = None
    if head_id is not None and head_hash is not None:
        if not _SHA256_HEX.match(head_hash):
            raise BadInput("head_hash must be 64 lower-case hex characters")
        expected = audit.AuditHead(head_id, head_hash)
    with services.sessions() as db:
        report = audit.verify_chain(db, expected_head=expected)
    return {
        "ok": report.ok,
        "rows_checked": report.rows_checked,
        "head": {"id": report.head.id, "row_hash": report.head.row_hash} if report.head else None,
        "first_bad_id": report.first_bad_id,
        "problem": report.problem.value if report.problem else None,
        "reason": report.reason,
    }


@router.get(
    "/sessions/{session_id}/package",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The signed evidence ZIP."}},
)
def export_session_package(session_id: str, services: ServicesDep, who: ReviewerDep) -> Response:
    """The signed evidence package (ZIP) of a session; the export writes its own audit row."""
    from media_server.package import PackageError, export_package

    key = services.signing_key
    with services.sessions() as db:
        if db.get(CheckSession, session_id) is None:
            raise NotFoundError("no such session")
        try:
            data = export_package(db, services.store, session_id, key, exporter=who.actor)
        except PackageError as exc:
            raise NotFoundError(str(exc)) from exc
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="kuzet-session-{session_id}.zip"',
            "Cache-Control": "no-store",
        },
    )
