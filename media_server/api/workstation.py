"""The reviewer workstation: server-rendered pages (Russian and English) over the same roles as the API.

Every view of biometric evidence and every decision is written to the audit log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from media_server.api.deps import ServicesDep
from media_server.auth import SESSION_COOKIE, Principal, password_login, principal_from_request, revoke_token
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, Role
from media_server.db.models import Artifact, CheckResultRecord, CheckSession, Person, Review, Verdict
from media_server.errors import BadInput, Forbidden, NotFoundError, TooManyRequests, Unauthorized
from media_server.i18n import LANGS, table
from media_server.security import login_throttle
from media_server.services import Services

router = APIRouter(prefix="/ws", tags=["workstation"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))

VIEWERS = frozenset({Role.REVIEWER, Role.OFFICER, Role.ADMIN})
LOGIN_TTL_S = 8 * 3600
MIN_COMMENT_CHARS = 3
# Confirmation banners a redirect may ask for, by key: the page never echoes text from the URL.
FLASHES = {"decided": "decided"}


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("kuzet_lang") or "ru"
    # Only known codes: the value is echoed into a cookie, URLs and the page.
    return lang if lang in LANGS else "ru"


def _page(request: Request, name: str, principal: Principal | None, **context: Any) -> HTMLResponse:
    lang = _lang(request)
    response = templates.TemplateResponse(
        request, name, {"t": table(lang), "lang": lang, "principal": principal, **context}
    )
    response.set_cookie("kuzet_lang", lang, samesite="strict")
    return response


def _viewer(request: Request) -> Principal | RedirectResponse:
    try:
        principal = principal_from_request(request)
    except Unauthorized:
        return RedirectResponse(f"/ws/login?lang={_lang(request)}", status_code=303)
    if principal.role not in VIEWERS:
        raise Forbidden(f"role {principal.role.value!r} has no access to the workstation")
    return principal


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login", response_model=None)
def login_submit(
    request: Request,
    services: ServicesDep,
    username: str = Form(max_length=64),
    password: str = Form(max_length=256),
) -> Response:
    client = request.client.host if request.client else None
    try:
        result = password_login(
            services,
            login_throttle(request.app.state),
            username,
            password,
            client,
            via="workstation",
            ttl_s=LOGIN_TTL_S,
        )
    except (Unauthorized, TooManyRequests) as exc:
        message = (
            "wrong username or password / неверный логин или пароль"
            if isinstance(exc, Unauthorized)
            else f"{exc} / слишком много неудачных попыток"
        )
        return _page(request, "login.html", None, error=message)
    response = RedirectResponse(f"/ws/queue?lang={_lang(request)}", status_code=303)
    response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict", max_age=LOGIN_TTL_S)
    return response


@router.get("/logout")
def logout(request: Request, services: ServicesDep) -> RedirectResponse:
    revoke_token(services, request.cookies.get(SESSION_COOKIE), via="workstation")
    response = RedirectResponse("/ws/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def flagged_sessions(db: Any) -> list[dict[str, Any]]:
    """Sessions whose latest verdict is REVIEW or FAIL and that no reviewer has decided yet, oldest first."""
    # Only the latest verdict of a session counts: a later PASS (a re-run) takes it off the queue.
    ranked = select(
        Verdict.id.label("verdict_id"),
        func.row_number()
        .over(partition_by=Verdict.session_id, order_by=(Verdict.created_at.desc(), Verdict.id.desc()))
        .label("rank"),
    ).subquery()
    reviewed = select(Review.verdict_id)
    rows = db.execute(
        select(Verdict, CheckSession, Person)
        .join(ranked, (ranked.c.verdict_id == Verdict.id) & (ranked.c.rank == 1))
        .join(CheckSession, Verdict.session_id == CheckSession.id)
        .join(Person, CheckSession.person_id == Person.id)
        .where(Verdict.decision.in_([Decision.REVIEW, Decision.FAIL]), Verdict.id.not_in(reviewed))
        .order_by(Verdict.created_at, Verdict.id)
    ).all()
    return [
        {
            "session_id": session.id,
            "verdict_id": verdict.id,
            "person": person.display_name,
            "kind": session.kind.value,
            "decision": verdict.decision.value,
            "reasons": verdict.reasons,
            "created_at": verdict.created_at,
        }
        for verdict, session, person in rows
    ]


@router.get("/queue", response_model=None)
def queue(request: Request, services: ServicesDep) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    with services.sessions() as db:
        rows = flagged_sessions(db)
    return _page(request, "queue.html", who, rows=rows)


@router.get("/sessions/{session_id}", response_model=None)
def session_detail(session_id: str, request: Request, services: ServicesDep) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    with services.sessions.begin() as db:
        s = db.get(CheckSession, session_id)
        if s is None:
            raise NotFoundError("no such session")
        person = db.get(Person, s.person_id)
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == s.id).order_by(Verdict.created_at.desc())
        ).first()
        checks = db.scalars(
            select(CheckResultRecord)
            .where(CheckResultRecord.session_id == s.id)
            .order_by(CheckResultRecord.created_at)
        ).all()
        artifacts = db.scalars(
            select(Artifact).where(Artifact.session_id == s.id).order_by(Artifact.created_at)
        ).all()
        reviews = db.scalars(
            select(Review).where(Review.session_id == s.id).order_by(Review.created_at)
        ).all()
        audit.append(
            db,
            actor=who.actor,
            action="evidence_viewed",
            subject_type="session",
            subject_id=s.id,
            details={"artifacts": [a.id for a in artifacts]},
        )
        by_kind: dict[ArtifactKind, list[Artifact]] = {}
        for a in artifacts:
            by_kind.setdefault(a.kind, []).append(a)
        reading = None
        for a in by_kind.get(ArtifactKind.READING, []):
            reading = json.dumps(json.loads(services.store.get_bytes(a.key)), indent=2, ensure_ascii=False)
        return _page(
            request,
            "session.html",
            who,
            s=s,
            person=person,
            verdict=verdict,
            checks=checks,
            reviews=reviews,
            recordings=by_kind.get(ArtifactKind.RECORDING, []),
            frames=by_kind.get(ArtifactKind.FRAME, []),
            audio=by_kind.get(ArtifactKind.AUDIO, []),
            photos=by_kind.get(ArtifactKind.PHOTO, []),
            reading=reading,
            can_decide=who.role is Role.REVIEWER,
            can_export=who.role in (Role.OFFICER, Role.ADMIN, Role.REVIEWER),
            flash=FLASHES.get(request.query_params.get("flash") or ""),
        )


@router.post("/sessions/{session_id}/decide", response_model=None)
def decide(
    session_id: str,
    request: Request,
    services: ServicesDep,
    decision: str = Form(max_length=16),
    comment: str = Form(max_length=4000),
) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    if who.role is not Role.REVIEWER:
        raise Forbidden("only a reviewer records decisions")
    try:
        chosen = Decision(decision)
    except ValueError as exc:
        raise BadInput("decision must be pass, fail or review") from exc
    if len(comment.strip()) < MIN_COMMENT_CHARS:
        raise BadInput("a comment explaining the decision is required")
    record_review(services, who, session_id, chosen, comment.strip())
    return RedirectResponse(f"/ws/sessions/{session_id}?lang={_lang(request)}&flash=decided", status_code=303)


def record_review(
    services: Services, who: Principal, session_id: str, decision: Decision, comment: str
) -> str:
    """Store a reviewer's decision on the latest verdict of a session, audited; returns the review id."""
    with services.sessions.begin() as db:
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == session_id).order_by(Verdict.created_at.desc())
        ).first()
        if verdict is None:
            raise NotFoundError("this session has no verdict to review yet")
        review = Review(
            session_id=session_id,
            verdict_id=verdict.id,
            reviewer_id=who.user_id,
            decision=decision,
            comment=comment,
        )
        db.add(review)
        db.flush()
        audit.append(
            db,
            actor=who.actor,
            action="review_decided",
            subject_type="session",
            subject_id=session_id,
            details={
                "review_id": review.id,
                "verdict_id": verdict.id,
                "decision": decision.value,
                "comment_sha256": hashlib.sha256(comment.encode()).hexdigest(),
            },
        )
        return review.id


@router.get("/artifacts/{artifact_id}", response_model=None)
def artifact(artifact_id: str, request: Request, services: ServicesDep) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    return stream_artifact(services, who, artifact_id)


def stream_artifact(services: Services, who: Principal, artifact_id: str) -> StreamingResponse:
    """The verified bytes of one artifact, after writing the evidence_viewed audit row."""
    with services.sessions.begin() as db:
        a = db.get(Artifact, artifact_id)
        if a is None:
            raise NotFoundError("no such artifact")
        audit.append(
            db,
            actor=who.actor,
            action="evidence_viewed",
            subject_type="artifact",
            subject_id=a.id,
            details={"session_id": a.session_id, "kind": a.kind.value, "sha256": a.sha256},
        )
        key, content_type = a.key, a.content_type
    f = services.store.open_verified(key)
    size = f.seek(0, 2)
    f.seek(0)

    def chunks() -> Iterator[bytes]:
        with f:
            yield from iter(lambda: f.read(1 << 16), b"")

    headers = {"Cache-Control": "no-store", "Content-Length": str(size)}
    return StreamingResponse(chunks(), media_type=content_type, headers=headers)
