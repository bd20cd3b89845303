"""The reviewer workstation: server-rendered pages in Russian, Kazakh and English over the API's roles.

Every view of biometric evidence and every decision is written to the audit log. Errors on these pages
are HTML pages in the reader's language, not JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from identity.checks import CheckKind
from media_server import charts
from media_server.api.deps import ServicesDep
from media_server.auth import SESSION_COOKIE, Principal, password_login, principal_from_request, revoke_token
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, Role, SessionKind, SessionStatus
from media_server.db.models import (
    Artifact,
    BreathEpisode,
    CheckResultRecord,
    CheckSession,
    Device,
    Enrolment,
    Person,
    Review,
    Schedule,
    User,
    Verdict,
)
from media_server.errors import (
    BadInput,
    Forbidden,
    KuzetError,
    NotFoundError,
    TooManyRequests,
    Unauthorized,
    status_for,
)
from media_server.evidence.port import EvidenceError, IntegrityError, NotFound
from media_server.i18n import (
    DECISION_WORDS,
    DEVICE_KINDS,
    EPISODE_STATES,
    LANGS,
    LANGUAGE_NAMES,
    MODALITIES,
    N_,
    OUTCOME_WORDS,
    ROLE_NAMES,
    SESSION_KINDS,
    SESSION_STATUSES,
    STAGES,
    Translator,
    check_name,
    pick_lang,
    translator,
    verdict_reason,
    word,
)
from media_server.review_queue import latest_verdict_ids
from media_server.review_views import (
    challenge_timeline,
    check_row,
    day_outcomes,
    frame_cards,
    local_time,
    ordered_checks,
    person_zone,
    photo_cards,
    reading_rows,
    recording_gaps,
    recording_offset_s,
    schedule_words,
    zone,
)
from media_server.security import login_throttle
from media_server.services import Services

log = logging.getLogger("kuzet.workstation")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))

VIEWERS = frozenset({Role.REVIEWER, Role.OFFICER, Role.ADMIN})
LOGIN_TTL_S = 8 * 3600
MIN_COMMENT_CHARS = 3
QUEUE_PAGE_SIZE = 25
PERSONS_PAGE_SIZE = 50
PERSON_HISTORY_DAYS = 60
PERSON_SESSIONS_SHOWN = 50
MAX_PAGE = 10_000
# Confirmation banners a redirect may ask for, by key: the page never echoes text from the URL.
FLASHES = {"decided": N_("Decision recorded")}
_WS_STATIC = {
    "ws.js": "text/javascript; charset=utf-8",
    "ws.css": "text/css; charset=utf-8",
    "call.js": "text/javascript; charset=utf-8",
}
ERROR_TITLES = {
    400: N_("The request could not be used"),
    401: N_("Please log in"),
    403: N_("You have no access to this page"),
    404: N_("Not found"),
    405: N_("This page does not take this kind of request"),
    409: N_("This cannot be done now"),
    422: N_("Some fields are missing or invalid"),
    500: N_("Something went wrong on the server"),
    503: N_("The service is unavailable; try again shortly"),
}
ERROR_TEXTS = {
    404: N_("There is no such session, person or file, or it was erased."),
    500: N_("The error was logged for the administrator. Try again; if it happens again, tell them."),
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang") or request.cookies.get("kuzet_lang"))


def _page(
    request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    lang = _lang(request)
    t = translator(lang)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "_": t,
            "t": t,
            "lang": lang,
            "langs": LANGS,
            "language_names": LANGUAGE_NAMES,
            "role_names": ROLE_NAMES,
            "principal": principal,
            "query": _query_without_lang(request),
            **context,
        },
        status_code=status_code,
    )
    response.set_cookie("kuzet_lang", lang, samesite="strict")
    return response


def _query_without_lang(request: Request) -> str:
    """The current query string minus `lang`, so the language links keep filters and pages."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    from urllib.parse import urlencode

    return urlencode(kept)


def error_page(
    request: Request, status: int, detail: str = "", headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    """An error as a page in the reader's language (the detail is the service's English message)."""
    t = translator(_lang(request))
    title = t(ERROR_TITLES.get(status, N_("Something went wrong")))
    text = t(ERROR_TEXTS[status]) if status in ERROR_TEXTS else ""
    try:
        who: Principal | None = principal_from_request(request)
    except (Unauthorized, KuzetError):
        who = None
    response = _page(request, "error.html", who, status_code=status, title=title, text=text, detail=detail)
    response.headers.update(headers or {})
    return response


class HtmlErrorRoute(APIRoute):
    """Workstation routes: domain, evidence and HTTP errors, and bugs (500), become HTML pages, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except KuzetError as exc:
                return error_page(request, status_for(exc), str(exc))
            except RequestValidationError as exc:
                fields = sorted({str(e.get("loc", ("",))[-1]) for e in exc.errors()})
                return error_page(request, 422, "missing or invalid: " + ", ".join(fields))
            except NotFound:
                return error_page(request, 404, "this artifact is not in the evidence store")
            except IntegrityError:
                log.error("stored evidence failed its hash check", extra={"path": request.url.path})
                return error_page(request, 409, "the stored artifact does not match its SHA-256; reported")
            except EvidenceError:
                return error_page(request, 503, "the evidence store is unavailable")
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail), exc.headers)
            except Exception:
                # A bug: logged with its trace; the reader gets a page without it.
                log.exception("workstation page failed", extra={"path": request.url.path})
                return error_page(request, 500)

        return handle


router = APIRouter(prefix="/ws", tags=["workstation"], include_in_schema=False, route_class=HtmlErrorRoute)


def _viewer(request: Request) -> Principal | RedirectResponse:
    try:
        principal = principal_from_request(request)
    except Unauthorized:
        return RedirectResponse(f"/ws/login?lang={_lang(request)}", status_code=303)
    if principal.role not in VIEWERS:
        raise Forbidden(f"role {principal.role.value!r} has no access to the workstation")
    return principal


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The workstation's own script and style (a fixed list: no directory is exposed)."""
    media_type = _WS_STATIC.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


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
        t = translator(_lang(request))
        if isinstance(exc, Unauthorized):
            return _page(request, "login.html", None, status_code=401, error=t("Wrong username or password."))
        error = t("Too many failed attempts. Wait a little and try again.")
        return _page(request, "login.html", None, status_code=429, error=error)
    response = RedirectResponse(f"/ws/queue?lang={_lang(request)}", status_code=303)
    response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict", max_age=LOGIN_TTL_S)
    return response


@router.get("/logout")
def logout(request: Request, services: ServicesDep) -> RedirectResponse:
    revoke_token(services, request.cookies.get(SESSION_COOKIE), via="workstation")
    response = RedirectResponse("/ws/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- the queue --------------------------------------------------------------------------------------------


def _latest_verdicts() -> Any:
    return latest_verdict_ids()


def flagged_sessions(db: Session) -> list[dict[str, Any]]:
    """Sessions whose latest verdict is REVIEW or FAIL and that no reviewer has decided yet, oldest first."""
    rows = db.execute(
        select(Verdict, CheckSession, Person)
        .join(CheckSession, Verdict.session_id == CheckSession.id)
        .join(Person, CheckSession.person_id == Person.id)
        .where(
            Verdict.id.in_(_latest_verdicts()),
            Verdict.decision.in_([Decision.REVIEW, Decision.FAIL]),
            Verdict.id.not_in(select(Review.verdict_id)),
            # An erased person's sessions leave the queue: nobody decides about data that is gone.
            Person.erased_at.is_(None),
        )
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


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadInput("dates are YYYY-MM-DD") from exc


def _int(value: str | None, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError as exc:
        raise BadInput("page must be a number") from exc
    return min(max(number, low), high)


def _drivers(t: Translator, checks: list[CheckResultRecord]) -> str:
    """The one or two checks behind a verdict, short: "Face match: unsure; Liveness challenge: failed"."""
    rows = [{"id": c.id, "outcome": c.outcome.value, "name": check_name(t, c.kind.value)} for c in checks]
    drivers, _ = ordered_checks(rows)
    return "; ".join(f"{d['name']}: {word(t, OUTCOME_WORDS, d['outcome'])}" for d in drivers)


@router.get("/queue", response_model=None)
def queue(request: Request, services: ServicesDep) -> Response:
    """Sessions waiting for a decision (or decided ones), filtered by kind, verdict, person and local date."""
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    q = request.query_params
    t = translator(_lang(request))
    kind = q.get("kind") or ""
    decision = q.get("decision") or ""
    state = q.get("state") or "pending"
    person_q = (q.get("person") or "").strip()[:100]
    sort = q.get("sort") or "oldest"
    if kind and kind not in SESSION_KINDS:
        raise BadInput("unknown kind")
    if decision and decision not in ("review", "fail", "pass"):
        raise BadInput("unknown decision")
    if state not in ("pending", "decided", "all") or sort not in ("oldest", "newest"):
        raise BadInput("unknown state or sort order")
    since, until = _date(q.get("from")), _date(q.get("to"))
    page = _int(q.get("page"), 1, 1, MAX_PAGE)
    agency = zone(None)
    stmt = (
        select(Verdict, CheckSession, Person)
        .join(CheckSession, Verdict.session_id == CheckSession.id)
        .join(Person, CheckSession.person_id == Person.id)
        .where(Verdict.id.in_(_latest_verdicts()))
    )
    reviewed = select(Review.verdict_id)
    if state == "pending":
        stmt = stmt.where(Verdict.decision.in_([Decision.REVIEW, Decision.FAIL]), Verdict.id.not_in(reviewed))
    elif state == "decided":
        stmt = stmt.where(Verdict.id.in_(reviewed))
    if kind:
        stmt = stmt.where(CheckSession.kind == SessionKind(kind))
    if decision:
        stmt = stmt.where(Verdict.decision == Decision(decision))
    if person_q:
        like = f"%{person_q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(or_(Person.display_name.ilike(like), Person.external_ref.ilike(like)))
    # Dates are the agency's calendar days (Asia/Almaty by default).
    if since is not None:
        stmt = stmt.where(Verdict.created_at >= datetime.combine(since, time(), agency).astimezone(UTC))
    if until is not None:
        end = datetime.combine(until + timedelta(days=1), time(), agency).astimezone(UTC)
        stmt = stmt.where(Verdict.created_at < end)
    order = (
        (Verdict.created_at.desc(), Verdict.id.desc())
        if sort == "newest"
        else (Verdict.created_at, Verdict.id)
    )
    with services.sessions() as db:
        total = int(db.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        found = db.execute(
            stmt.order_by(*order).offset((page - 1) * QUEUE_PAGE_SIZE).limit(QUEUE_PAGE_SIZE)
        ).all()
        ids = [s.id for _, s, _ in found]
        checks: dict[str, list[CheckResultRecord]] = {}
        for c in db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id.in_(ids))):
            checks.setdefault(c.session_id, []).append(c)
        verdict_ids = [v.id for v, _, _ in found]
        reviews = {
            r.verdict_id: (r, u)
            for r, u in db.execute(
                select(Review, User)
                .join(User, Review.reviewer_id == User.id)
                .where(Review.verdict_id.in_(verdict_ids))
            ).all()
        }
        episode_ids = {
            str((s.meta or {}).get("episode_id")) for _, s, _ in found if (s.meta or {}).get("episode_id")
        }
        episodes = {
            e.id: e for e in db.scalars(select(BreathEpisode).where(BreathEpisode.id.in_(episode_ids)))
        }
        rows = []
        for verdict, session, person in found:
            tz = person_zone(person)
            stage = (session.meta or {}).get("stage")
            review = reviews.get(verdict.id)
            rows.append(
                {
                    "session_id": session.id,
                    "person": person.display_name,
                    "person_id": person.id,
                    "external_ref": person.external_ref,
                    "kind": word(t, SESSION_KINDS, session.kind.value),
                    "stage": word(t, STAGES, stage) if stage else "",
                    "episode": _episode_summary(t, episodes.get(str((session.meta or {}).get("episode_id")))),
                    "decision": verdict.decision.value,
                    "decision_word": word(t, DECISION_WORDS, verdict.decision.value),
                    "drivers": _drivers(t, checks.get(session.id, [])),
                    "when": local_time(verdict.created_at, tz),
                    "review": None
                    if review is None
                    else {
                        "decision": review[0].decision.value,
                        "word": word(t, DECISION_WORDS, review[0].decision.value),
                        "by": review[1].username,
                    },
                }
            )
    pages = max(math.ceil(total / QUEUE_PAGE_SIZE), 1)
    filters = {
        "kind": kind,
        "decision": decision,
        "state": state,
        "person": person_q,
        "from": q.get("from") or "",
        "to": q.get("to") or "",
        "sort": sort,
    }
    return _page(
        request,
        "queue.html",
        who,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        kinds=SESSION_KINDS,
        decisions=DECISION_WORDS,
        page_link=lambda n: _link("/ws/queue", {**filters, "page": str(n)}, _lang(request)),
    )


def _episode_summary(t: Translator, row: BreathEpisode | None) -> str:
    """ "episode: confirmed positive, 2 tests" for a queue row of a breath test in an episode."""
    if row is None:
        return ""
    tests = {h.get("session_id") for h in row.history or [] if isinstance(h, dict) and h.get("session_id")}
    return t("episode: {state}, {n} tests", state=word(t, EPISODE_STATES, row.state), n=max(len(tests), 1))


def _link(path: str, params: dict[str, str], lang: str) -> str:
    from urllib.parse import urlencode

    return f"{path}?{urlencode({**{k: v for k, v in params.items() if v}, 'lang': lang})}"


# --- one session ------------------------------------------------------------------------------------------


def _reading(services: Services, artifacts: list[Artifact]) -> dict[str, Any] | None:
    for a in artifacts:
        if a.kind is ArtifactKind.READING or (a.meta or {}).get("what") == "breath_reading":
            data = json.loads(services.store.get_bytes(a.key))
            return data if isinstance(data, dict) else {"value": data}
    return None


def _episode(db: Session, t: Translator, s: CheckSession, tz: Any) -> dict[str, Any] | None:
    """The breath episode this session belongs to: its state and every test in it, linked."""
    episode_id = (s.meta or {}).get("episode_id")
    row = db.get(BreathEpisode, episode_id) if isinstance(episode_id, str) else None
    if row is None:
        return None
    ids: list[str] = []
    for h in row.history or []:
        sid = h.get("session_id") if isinstance(h, dict) else None
        if sid and sid not in ids:
            ids.append(sid)
    for sid in (row.first_session_id, row.last_session_id):
        if sid and sid not in ids:
            ids.append(sid)
    sessions = {x.id: x for x in db.scalars(select(CheckSession).where(CheckSession.id.in_(ids)))}
    tests = []
    for sid in ids:
        other = sessions.get(sid)
        if other is None:
            continue
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == sid).order_by(Verdict.created_at.desc())
        ).first()
        reading = db.scalars(
            select(CheckResultRecord).where(
                CheckResultRecord.session_id == sid, CheckResultRecord.kind == CheckKind.BREATH_READING
            )
        ).all()
        value = next((c for c in reading if c.score is not None), None)
        stage = (other.meta or {}).get("stage")
        tests.append(
            {
                "session_id": sid,
                "current": sid == s.id,
                "stage": word(t, STAGES, stage) if stage else "—",
                "when": local_time(other.started_at or other.created_at, tz),
                "brac": f"{value.score:.3f} {(value.details or {}).get('score_unit', '')}" if value else "—",
                "decision": verdict.decision.value if verdict else "",
                "decision_word": word(t, DECISION_WORDS, verdict.decision.value) if verdict else "—",
            }
        )
    return {
        "id": row.id,
        "state": word(t, EPISODE_STATES, row.state),
        "stage": word(t, STAGES, row.stage),
        "due": local_time(row.due_at, tz),
        "closed": row.closed_at is not None,
        "tests": tests,
    }


@router.get("/sessions/{session_id}", response_model=None)
def session_detail(session_id: str, request: Request, services: ServicesDep) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    t = translator(_lang(request))
    with services.sessions.begin() as db:
        s = db.get(CheckSession, session_id)
        if s is None:
            raise NotFoundError("no such session")
        person = db.get(Person, s.person_id)
        tz = person_zone(person)
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == s.id).order_by(Verdict.created_at.desc())
        ).first()
        checks = list(
            db.scalars(
                select(CheckResultRecord)
                .where(CheckResultRecord.session_id == s.id)
                .order_by(CheckResultRecord.created_at, CheckResultRecord.id)
            ).all()
        )
        artifacts = list(
            db.scalars(
                select(Artifact).where(Artifact.session_id == s.id).order_by(Artifact.created_at)
            ).all()
        )
        reviews = db.execute(
            select(Review, User)
            .join(User, Review.reviewer_id == User.id)
            .where(Review.session_id == s.id)
            .order_by(Review.created_at)
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
        recordings = by_kind.get(ArtifactKind.RECORDING, [])
        offset = recording_offset_s(recordings)
        reading = _reading(services, artifacts)
        reuse = next((c for c in checks if c.kind.value == "photo_reuse"), None)
        earlier_ids = [
            str(m.get("earlier_photo_id"))
            for key in ("exact", "near")
            for m in ((reuse.details or {}).get(key, []) if reuse is not None else [])
        ]
        earlier = {a.id: a for a in db.scalars(select(Artifact).where(Artifact.id.in_(earlier_ids)))}
        rows = [check_row(t, c) for c in checks]
        drivers, ordered = ordered_checks(rows)
        decided = verdict is not None and any(r.verdict_id == verdict.id for r, _ in reviews)
        loc = s.location or {}
        return _page(
            request,
            "session.html",
            who,
            s=s,
            person=person,
            kind=word(t, SESSION_KINDS, s.kind.value),
            status=word(t, SESSION_STATUSES, s.status.value),
            stage=word(t, STAGES, (s.meta or {}).get("stage")) if (s.meta or {}).get("stage") else "",
            window=f"{local_time(s.window_start, tz)} — {local_time(s.window_end, tz)}",
            taken=f"{local_time(s.started_at, tz)} — {local_time(s.ended_at, tz)}" if s.started_at else "—",
            location=loc if loc.get("lat") is not None else None,
            location_status=loc.get("status") if loc else None,
            verdict=verdict,
            verdict_word=word(t, DECISION_WORDS, verdict.decision.value) if verdict else "",
            verdict_reasons=[verdict_reason(t, r) for r in (verdict.reasons if verdict else [])],
            verdict_time=local_time(verdict.created_at, tz) if verdict else "",
            drivers=drivers,
            checks=ordered,
            timeline=challenge_timeline(t, s.challenge, checks, offset),
            recordings=recordings,
            recording_gaps={a.id: recording_gaps(t, a, offset) for a in recordings},
            frames=frame_cards(t, by_kind.get(ArtifactKind.FRAME, []), checks, offset),
            audio=by_kind.get(ArtifactKind.AUDIO, []),
            photos=photo_cards(t, by_kind.get(ArtifactKind.PHOTO, []), reading, checks, earlier, tz),
            reading=reading_rows(t, reading, tz) if reading else None,
            episode=_episode(db, t, s, tz),
            reviews=[
                {
                    "decision": r.decision.value,
                    "word": word(t, DECISION_WORDS, r.decision.value),
                    "by": u.username,
                    "when": local_time(r.created_at, tz),
                    "comment": r.comment,
                }
                for r, u in reviews
            ],
            can_decide=who.role is Role.REVIEWER and verdict is not None and not decided,
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


# --- persons ----------------------------------------------------------------------------------------------


@router.get("/persons", response_model=None)
def persons(request: Request, services: ServicesDep) -> Response:
    """Everyone under supervision, searchable by name or case number, a page at a time."""
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    q = (request.query_params.get("q") or "").strip()[:100]
    page = _int(request.query_params.get("page"), 1, 1, MAX_PAGE)
    with services.sessions() as db:
        stmt = select(Person).where(Person.erased_at.is_(None))
        if q:
            like = f"%{q.replace('%', '').replace('_', '')}%"
            stmt = stmt.where(or_(Person.display_name.ilike(like), Person.external_ref.ilike(like)))
        total = int(db.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        people = db.scalars(
            stmt.order_by(Person.display_name, Person.id)
            .offset((page - 1) * PERSONS_PAGE_SIZE)
            .limit(PERSONS_PAGE_SIZE)
        ).all()
        rows = [{"id": p.id, "name": p.display_name, "ref": p.external_ref, "tz": p.timezone} for p in people]
    pages = max(math.ceil(total / PERSONS_PAGE_SIZE), 1)
    return _page(
        request,
        "persons.html",
        who,
        rows=rows,
        q=q,
        page=page,
        pages=pages,
        total=total,
        page_link=lambda n: _link("/ws/persons", {"q": q, "page": str(n)}, _lang(request)),
    )


def person_overview(db: Session, person: Person) -> dict[str, Any]:
    """Enrolment state, court order, devices and schedules of a person (shared by the API and the page)."""
    enrolments = db.scalars(
        select(Enrolment).where(Enrolment.person_id == person.id, Enrolment.active.is_(True))
    ).all()
    state: dict[str, Any] = {"face": None, "voice": None}
    for e in enrolments:
        current = state.get(e.modality.value)
        if current is None or e.created_at > current["created_at"]:
            state[e.modality.value] = {
                "created_at": e.created_at,
                "samples": e.n_samples,
                "model": f"{e.model_name} {e.model_version}",
                "source": e.source.value,
            }
    devices = db.scalars(
        select(Device).where(Device.person_id == person.id).order_by(Device.created_at)
    ).all()
    schedules = db.scalars(
        select(Schedule).where(Schedule.person_id == person.id).order_by(Schedule.created_at)
    ).all()
    return {
        "enrolment": state,
        "enrolled": state["face"] is not None,
        "order": None
        if person.order_brac_limit is None
        else {"brac_limit": person.order_brac_limit, "unit": person.order_brac_unit},
        "devices": [
            {
                "id": d.id,
                "serial": d.serial,
                "kind": d.kind.value,
                "active": d.active,
                "calibrated_on": d.calibrated_on.isoformat() if d.calibrated_on else None,
            }
            for d in devices
        ],
        "schedules": [
            {
                "id": sc.id,
                "kind": sc.kind.value,
                "rule": sc.rule,
                "timezone": sc.timezone,
                "active": sc.active,
            }
            for sc in schedules
        ],
    }


def person_sessions(
    db: Session, person_id: str, limit: int, offset: int = 0
) -> list[tuple[CheckSession, Verdict | None]]:
    """A person's sessions, newest first, each with its latest verdict."""
    latest = _latest_verdicts()
    rows = db.execute(
        select(CheckSession, Verdict)
        .outerjoin(Verdict, (Verdict.session_id == CheckSession.id) & Verdict.id.in_(latest))
        .where(CheckSession.person_id == person_id)
        .order_by(CheckSession.window_start.desc(), CheckSession.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [(s, v) for s, v in rows]


@router.get("/persons/{person_id}", response_model=None)
def person_page(person_id: str, request: Request, services: ServicesDep) -> Response:
    """One person: enrolment, order, devices, schedules, history charts and recent sessions."""
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    t = translator(_lang(request))
    since = datetime.now(UTC) - timedelta(days=PERSON_HISTORY_DAYS)
    with services.sessions.begin() as db:
        person = db.get(Person, person_id)
        if person is None or person.erased_at is not None:
            raise NotFoundError("no such person")
        tz = person_zone(person)
        overview = person_overview(db, person)
        recent = person_sessions(db, person.id, PERSON_SESSIONS_SHOWN)
        history = db.execute(
            select(CheckSession, Verdict)
            .join(Verdict, Verdict.session_id == CheckSession.id)
            .where(
                CheckSession.person_id == person.id,
                Verdict.id.in_(_latest_verdicts()),
                Verdict.created_at >= since,
            )
        ).all()
        readings = db.execute(
            select(CheckResultRecord, Verdict, CheckSession.started_at)
            .join(CheckSession, CheckResultRecord.session_id == CheckSession.id)
            .join(Verdict, Verdict.session_id == CheckSession.id)
            .where(
                CheckSession.person_id == person.id,
                CheckResultRecord.kind == CheckKind.BREATH_READING,
                CheckResultRecord.score.is_not(None),
                Verdict.id.in_(_latest_verdicts()),
                Verdict.created_at >= since,
            )
        ).all()
        audit.append(
            db,
            actor=who.actor,
            action="person_viewed",
            subject_type="person",
            subject_id=person.id,
            details={"via": "workstation"},
        )
        order = overview["order"]
        unit = (
            order["unit"]
            if order
            else next((str((c.details or {}).get("score_unit", "")) for c, _, _ in readings), "g/210L")
        )
        limit = (
            order["brac_limit"] if order else next((c.threshold for c, _, _ in readings if c.threshold), None)
        )
        brac_svg = charts.brac_chart(
            [
                ((taken or c.created_at).astimezone(tz), float(c.score or 0.0), v.decision.value)
                for c, v, taken in readings
            ],
            limit,
            unit,
            {"title": t("BrAC over time"), "limit": t("limit"), "empty": t("No breath readings yet.")},
        )
        days = day_outcomes(
            (
                (v.created_at, v.decision.value)
                for s, v in history
                if s.kind in (SessionKind.CHECKIN, SessionKind.STATION)
            ),
            tz,
        )
        outcome_svg = charts.outcome_chart(
            days,
            {
                "title": t("Check-in outcomes by day"),
                "empty": t("No check-ins yet."),
                **{k: t(v) for k, v in DECISION_WORDS.items()},
            },
        )
        enrolment = [
            {
                "name": word(t, MODALITIES, k),
                "info": None if v is None else {**v, "created_at": local_time(v["created_at"], tz)},
            }
            for k, v in overview["enrolment"].items()
        ]
        sessions = [
            {
                "id": s.id,
                "kind": word(t, SESSION_KINDS, s.kind.value),
                "status": word(t, SESSION_STATUSES, s.status.value),
                "when": local_time(s.started_at or s.window_start, tz),
                "decision": v.decision.value if v else "",
                "decision_word": word(t, DECISION_WORDS, v.decision.value) if v else "—",
                "live": s.status is SessionStatus.ACTIVE and s.kind is not SessionKind.BREATH,
            }
            for s, v in recent
        ]
        return _page(
            request,
            "person.html",
            who,
            person=person,
            enrolment=enrolment,
            enrolled=overview["enrolled"],
            order=order,
            devices=[{**d, "kind_word": word(t, DEVICE_KINDS, d["kind"])} for d in overview["devices"]],
            schedules=[
                {
                    **sc,
                    "kind_word": word(t, SESSION_KINDS, sc["kind"]),
                    "words": schedule_words(t, sc["rule"], sc["timezone"]),
                }
                for sc in overview["schedules"]
            ],
            brac_svg=brac_svg,
            outcome_svg=outcome_svg,
            sessions=sessions,
            history_days=PERSON_HISTORY_DAYS,
        )


# --- evidence bytes ---------------------------------------------------------------------------------------


@router.get("/artifacts/{artifact_id}", response_model=None)
def artifact(artifact_id: str, request: Request, services: ServicesDep) -> Response:
    who = _viewer(request)
    if isinstance(who, RedirectResponse):
        return who
    return stream_artifact(services, who, artifact_id, request.headers.get("range"))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last inclusive) a `Range` header asks for; None: send the whole file.

    Raises ValueError for a range that cannot be satisfied (answered 416). Several ranges are answered
    with the whole file, which HTTP allows.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(size - n, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise ValueError("range outside the file")
    return start, end


def stream_artifact(
    services: Services, who: Principal, artifact_id: str, range_header: str | None = None
) -> Response:
    """The verified bytes of one artifact (or the byte range asked for), after the evidence_viewed audit row."""
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
            details={
                "session_id": a.session_id,
                "kind": a.kind.value,
                "sha256": a.sha256,
                "range": range_header,
            },
        )
        key, content_type = a.key, a.content_type
    f = services.store.open_verified(key)
    size = f.seek(0, 2)
    headers = {"Cache-Control": "no-store", "Accept-Ranges": "bytes"}
    try:
        wanted = parse_range(range_header, size)
    except ValueError:
        f.close()
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = wanted if wanted is not None else (0, size - 1)
    f.seek(start)
    headers["Content-Length"] = str(max(end - start + 1, 0))
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _chunks(f, end - start + 1),
        status_code=206 if wanted is not None else 200,
        media_type=content_type,
        headers=headers,
    )


def _chunks(f: IO[bytes], remaining: int) -> Iterator[bytes]:
    with f:
        while remaining > 0:
            block = f.read(min(1 << 16, remaining))
            if not block:
                return
            remaining -= len(block)
            yield block


@router.api_route("/{path:path}", methods=["GET", "POST"], response_model=None)
def unknown_page(path: str, request: Request) -> Response:
    """Any other /ws address: a 404 page, not JSON."""
    return error_page(request, 404, f"no page /ws/{path[:100]}")
