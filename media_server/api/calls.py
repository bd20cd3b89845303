"""The officer's live call and watching a check-in: JSON API, WHIP/WHEP endpoints and the officer's page.

- `POST /api/v1/persons/{id}/calls` starts a call: a one-time link for the person (`/call/<token>`);
- the officer publishes with `POST /api/v1/calls/{id}/whip` and watches the person with
  `POST /api/v1/calls/{id}/whep`; the person publishes with the ordinary `POST /whip` (their link is the
  bearer) and watches the officer with `POST /call/whep` (same bearer);
- `GET /api/v1/calls/{id}` is the officer's live view (connection, live face results, then the checks and
  verdict as soon as they are written); `POST /api/v1/calls/{id}/end` ends it with a decision and comment;
- `POST /api/v1/sessions/{id}/whep` watches a check-in in progress (read-only, audited).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from media_server.api.deps import OfficerDep, ServicesDep
from media_server.api.reviews import ReviewIn
from media_server.api.whip import read_capped
from media_server.api.workstation import HtmlErrorRoute, _viewer
from media_server.api.workstation import _page as workstation_page
from media_server.auth import Principal, require_bearer
from media_server.calls.hub import CALL_PATH, CallHub, create_call, load_call
from media_server.db import audit
from media_server.db.enums import Decision, Role, SessionKind, SessionStatus
from media_server.db.models import CheckResultRecord, CheckSession, Review, Verdict
from media_server.errors import (
    Forbidden,
    Gone,
    NotFoundError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from media_server.i18n import DECISION_WORDS
from media_server.lifecycle import require_active
from media_server.package import iso, review_view, verdict_view
from media_server.services import Services
from media_server.tokens import token_hash
from media_server.webrtc.ice import parse_ice_server
from media_server.webrtc.ingest import SDP_MEDIA_TYPE
from media_server.webrtc.whep import WhepEgress

router = APIRouter(tags=["calls"])
pages = APIRouter(prefix="/ws", tags=["workstation"], include_in_schema=False, route_class=HtmlErrorRoute)


def _hub(request: Request) -> CallHub:
    hub: CallHub | None = getattr(request.app.state, "call_hub", None)
    if hub is None:
        raise ServiceUnavailable("media calls are not running")
    return hub


def _egress(request: Request) -> WhepEgress:
    egress: WhepEgress | None = getattr(request.app.state, "whep_egress", None)
    if egress is None:
        raise ServiceUnavailable("media egress is not running")
    return egress


async def _sdp_body(request: Request, content_type: str | None, services: Services) -> bytes:
    if (content_type or "").split(";", 1)[0].strip().lower() != SDP_MEDIA_TYPE:
        raise UnsupportedMediaType(f"Content-Type must be {SDP_MEDIA_TYPE}")
    return await read_capped(request, services.settings.media.max_offer_bytes)


def _sdp_created(answer: str, location: str) -> Response:
    return Response(
        content=answer,
        status_code=201,
        media_type=SDP_MEDIA_TYPE,
        headers={"Location": location, "Cache-Control": "no-store"},
    )


def _audit(services: Services, actor: str, action: str, session_id: str, details: dict[str, Any]) -> None:
    with services.sessions.begin() as db:
        audit.append(db, actor, action, "session", session_id, details)


def _owner(who: Principal) -> str:
    return f"user:{who.user_id}"


# --- starting and following a call -----------------------------------------------------------------


@router.post("/api/v1/persons/{person_id}/calls", status_code=201)
async def start_call(person_id: str, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Start a call: the person's one-time link (shown once; valid `calls.link_valid_min`), audited."""
    issued = await asyncio.to_thread(create_call, services, person_id, who)
    return {
        "call_id": issued.session_id,
        "person_id": person_id,
        "token": issued.token,
        "url": f"{CALL_PATH}{issued.token}",
        "window_end": issued.window_end.isoformat(),
        "officer_page": f"/ws/calls/{issued.session_id}",
    }


def _results(services: Services, call_id: str) -> dict[str, Any]:
    with services.sessions() as db:
        row = db.get(CheckSession, call_id)
        if row is None:
            raise NotFoundError("no such call")
        checks = db.scalars(
            select(CheckResultRecord)
            .where(CheckResultRecord.session_id == call_id)
            .order_by(CheckResultRecord.created_at, CheckResultRecord.id)
        ).all()
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == call_id).order_by(Verdict.created_at.desc())
        ).first()
        reviews = db.scalars(
            select(Review).where(Review.session_id == call_id).order_by(Review.created_at)
        ).all()
        return {
            "call": {
                "id": row.id,
                "person_id": row.person_id,
                "status": row.status.value,
                "window_end": iso(row.window_end),
                "started_at": iso(row.started_at),
                "ended_at": iso(row.ended_at),
            },
            "checks": [c.to_check().to_dict() for c in checks],
            "verdict": verdict_view(verdict) if verdict is not None else None,
            "reviews": [review_view(r) for r in reviews],
        }


@router.get("/api/v1/calls/{call_id}")
async def call_state(
    call_id: str, request: Request, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """The officer's live view: who is connected, live face results, then the checks and the verdict."""
    await asyncio.to_thread(load_call, services, call_id)
    stored = await asyncio.to_thread(_results, services, call_id)
    return {**stored, **_hub(request).live_state(call_id)}


class CallEndIn(ReviewIn):
    """The officer's decision that ends a call: the same fields and rules as a reviewer's decision."""


@router.post("/api/v1/calls/{call_id}/end")
async def end_call(
    call_id: str, body: CallEndIn, request: Request, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """End the call with the officer's decision: both recordings stored, the person's checks and verdict
    written, the decision recorded as a review (`review_decided`) and the end audited (`call.ended`)."""
    ended = await _hub(request).end(call_id, who, body.decision, body.comment)
    return ended.to_dict()


# --- the officer's media ----------------------------------------------------------------------------


@router.post("/api/v1/calls/{call_id}/whip", status_code=201, response_class=Response)
async def officer_publish(
    call_id: str,
    request: Request,
    services: ServicesDep,
    who: OfficerDep,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:
    """The officer's camera and microphone into the call (WHIP: SDP offer in, answer out)."""
    call = await asyncio.to_thread(load_call, services, call_id)
    body = await _sdp_body(request, content_type, services)
    resource_id, answer = await _hub(request).publish(call, body)
    await asyncio.to_thread(
        _audit, services, who.actor, "call.officer_publish", call_id, {"resource": resource_id}
    )
    return _sdp_created(answer, f"/api/v1/calls/{call_id}/whip/{resource_id}")


@router.delete("/api/v1/calls/{call_id}/whip/{resource_id}")
async def officer_unpublish(
    call_id: str, resource_id: str, request: Request, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """The officer stops sending: the recording so far is stored now; the call goes on until it is ended."""
    artifact = await _hub(request).unpublish(call_id, resource_id)
    await asyncio.to_thread(
        _audit,
        services,
        who.actor,
        "call.officer_unpublish",
        call_id,
        {"resource": resource_id, "artifact": artifact},
    )
    return {"call_id": call_id, "officer_recording_artifact": artifact}


@router.post("/api/v1/calls/{call_id}/whep", status_code=201, response_class=Response)
async def officer_watch_call(
    call_id: str,
    request: Request,
    services: ServicesDep,
    who: OfficerDep,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:
    """The officer receives the person's audio and video (WHEP); the person may join after this."""
    call = await asyncio.to_thread(load_call, services, call_id)
    body = await _sdp_body(request, content_type, services)
    hub = _hub(request)
    resource_id, answer = await _egress(request).open(
        body, lookup=lambda: hub.person_source(call_id), owner=_owner(who), subject=call_id
    )
    hub.start_probe(call)
    await asyncio.to_thread(
        _audit, services, who.actor, "session.watched", call_id, {"resource": resource_id}
    )
    return _sdp_created(answer, f"/api/v1/whep/{resource_id}")


@router.post("/api/v1/sessions/{session_id}/whep", status_code=201, response_class=Response)
async def officer_watch_checkin(
    session_id: str,
    request: Request,
    services: ServicesDep,
    who: OfficerDep,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:
    """Watch a check-in in progress (read-only WHEP: nothing reaches the person); audited `session.watched`.

    404 when the session is not live on this node (not started, ended, or another media node holds it)."""
    body = await _sdp_body(request, content_type, services)
    hub = _hub(request)
    if hub.person_source(session_id) is None:
        raise NotFoundError("this session is not in progress on this server")
    resource_id, answer = await _egress(request).open(
        body, lookup=lambda: hub.person_source(session_id), owner=_owner(who), subject=session_id
    )
    await asyncio.to_thread(
        _audit, services, who.actor, "session.watched", session_id, {"resource": resource_id}
    )
    return _sdp_created(answer, f"/api/v1/whep/{resource_id}")


@router.delete("/api/v1/whep/{resource_id}")
async def officer_unwatch(resource_id: str, request: Request, who: OfficerDep) -> Response:
    """End one of the officer's own viewers."""
    await _egress(request).delete(resource_id, _owner(who))
    return Response(status_code=200)


# --- the person's view of the officer ----------------------------------------------------------------


def _person_call(services: Services, token: str) -> CheckSession:
    """The live call a person's link opened (the link is spent by POST /whip; it then stays their key)."""
    with services.sessions() as db:
        row = db.scalars(
            select(CheckSession).where(CheckSession.token_hash == token_hash(token))
        ).one_or_none()
        if row is None or row.kind is not SessionKind.CALL:
            raise Unauthorized("unknown call link")
        require_active(db, row.person_id)
        if row.status is SessionStatus.CANCELLED:
            raise Gone("this call was cancelled")
        if row.status is not SessionStatus.ACTIVE:
            raise Unauthorized("this call is not in progress: join it first (POST /whip)")
        db.expunge(row)
        return row


@router.post("/call/whep", status_code=201, response_class=Response)
async def person_watch_officer(
    request: Request,
    services: ServicesDep,
    content_type: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """The person receives the officer's audio and video (WHEP), with the call link as the bearer."""
    token = require_bearer(authorization)
    body = await _sdp_body(request, content_type, services)
    call = await asyncio.to_thread(_person_call, services, token)
    hub = _hub(request)
    resource_id, answer = await _egress(request).open(
        body, lookup=lambda: hub.officer_source(call.id), owner=token_hash(token), subject=call.id
    )
    return _sdp_created(answer, f"/call/whep/{resource_id}")


@router.delete("/call/whep/{resource_id}")
async def person_unwatch(
    resource_id: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """End the person's viewer (same bearer)."""
    await _egress(request).delete(resource_id, token_hash(require_bearer(authorization)))
    return Response(status_code=200)


# --- the officer's page -----------------------------------------------------------------------------


# The workstation's CSP plus what a call needs: fetch to the API and live media from the peer connection.
_CALL_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
}


def _officer_page(
    request: Request,
    services: Services,
    principal: Principal,
    mode: str,
    session: CheckSession,
    link: str | None = None,
) -> HTMLResponse:
    config = {
        "mode": mode,
        "sessionId": session.id,
        "stateUrl": f"/api/v1/calls/{session.id}" if mode == "call" else None,
        "whipUrl": f"/api/v1/calls/{session.id}/whip" if mode == "call" else None,
        "whepUrl": f"/api/v1/calls/{session.id}/whep"
        if mode == "call"
        else f"/api/v1/sessions/{session.id}/whep",
        "endUrl": f"/api/v1/calls/{session.id}/end" if mode == "call" else None,
        "iceServers": [parse_ice_server(u) for u in services.settings.media.ice_servers],
    }
    response = workstation_page(
        request,
        "call.html",
        principal,
        mode=mode,
        session=session,
        link=link,
        decisions=[d.value for d in Decision],
        decision_words=DECISION_WORDS,
        config_json=json.dumps(config).replace("</", "<\\/"),
    )
    response.headers.update(_CALL_PAGE_HEADERS)
    return response


def _page_principal(request: Request) -> Principal | RedirectResponse:
    who = _viewer(request)
    if isinstance(who, Principal) and who.role not in (Role.OFFICER, Role.ADMIN):
        raise Forbidden("only an officer may hold a call or watch a check-in")
    return who


@pages.get("/calls/{call_id}", response_model=None)
async def call_page(call_id: str, request: Request, services: ServicesDep) -> Response:
    """The officer's call screen: own camera, the person's video, live results, end with a decision."""
    who = _page_principal(request)
    if isinstance(who, RedirectResponse):
        return who
    call = await asyncio.to_thread(load_call, services, call_id)
    return _officer_page(request, services, who, "call", call)


@pages.post("/persons/{person_id}/calls", response_model=None)
async def start_call_page(person_id: str, request: Request, services: ServicesDep) -> Response:
    """The person page's "Start a video call": the call screen, with the person's link shown this once."""
    who = _page_principal(request)
    if isinstance(who, RedirectResponse):
        return who
    issued = await asyncio.to_thread(create_call, services, person_id, who)
    call = await asyncio.to_thread(load_call, services, issued.session_id)
    link = f"{str(request.base_url).rstrip('/')}{CALL_PATH}{issued.token}"
    return _officer_page(request, services, who, "call", call, link=link)


@pages.get("/watch/{session_id}", response_model=None)
async def watch_page(session_id: str, request: Request, services: ServicesDep) -> Response:
    """Watch a check-in in progress (read-only)."""
    who = _page_principal(request)
    if isinstance(who, RedirectResponse):
        return who

    def load() -> CheckSession:
        with services.sessions() as db:
            row = db.get(CheckSession, session_id)
            if row is None:
                raise NotFoundError("no such session")
            db.expunge(row)
            return row

    session = await asyncio.to_thread(load)
    return _officer_page(request, services, who, "watch", session)
