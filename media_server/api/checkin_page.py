"""The phone check-in page: server-rendered, three languages, WebRTC via WHIP from checkin.js."""

from __future__ import annotations

import asyncio
import html as html_lib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select

from media_server.auth import require_bearer
from media_server.db.enums import SessionStatus
from media_server.db.models import CheckSession
from media_server.db.types import utcnow
from media_server.errors import BadInput, Gone, LinkRefused, NotFoundError, Unauthorized
from media_server.i18n import checkin_strings
from media_server.lifecycle import PersonNotActive, refuse_entry, require_active
from media_server.location.page import PageReport, submit_page_report
from media_server.schedules.tick import PAGE_OPENED_META
from media_server.services import Services
from media_server.settings import Settings
from media_server.tokens import token_hash
from media_server.webrtc.ice import parse_ice_server
from media_server.webrtc.ingest import WhipIngest

router = APIRouter(tags=["checkin"])

PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
LANGUAGES = ("ru", "kk", "en")
DEFAULT_LANGUAGE = "ru"
LINK_REASONS = frozenset({"unknown", "used", "expired", "not_yet", "closed"})
# Check-in tokens are URL-safe; anything else is not one of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{8,1024}$")
_STATIC_FILES = {
    "checkin.js": "text/javascript; charset=utf-8",
    "checkin.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The token is in the URL: never leak it in a Referer.
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=(self)",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


def load_strings() -> dict[str, dict[str, str]]:
    """UI strings per language from the gettext catalogs (media_server/locale; one table for server and JS)."""
    return checkin_strings()


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]))


def pick_language(query: str | None, accept_language: str | None) -> str:
    """?lang= wins, then the first supported Accept-Language, then Russian."""
    if query in LANGUAGES:
        return str(query)
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


def _settings(request: Request) -> Settings:
    settings: Settings | None = getattr(request.app.state, "settings", None)
    return settings or Settings()


def note_page_opened(services: Services, token: str) -> None:
    """Refuse a revoked link or a person no longer supervised (Gone / PersonNotActive); otherwise mark
    an open scheduled session as opened once, so a window opened but never connected is told apart from
    one never opened (`schedules.tick.mark_missed`). Unknown tokens pass: POST /whip refuses them."""
    refused: PersonNotActive | None = None
    with services.sessions() as db:
        row = db.scalars(
            select(CheckSession).where(CheckSession.token_hash == token_hash(token))
        ).one_or_none()
        if row is None:
            return
        session_id = row.id
        try:
            require_active(db, row.person_id)
        except PersonNotActive as exc:
            refused = exc
        else:
            if row.status is SessionStatus.CANCELLED:
                raise Gone("this check-in link was revoked; ask your officer for a new one")
            if row.status is SessionStatus.SCHEDULED and PAGE_OPENED_META not in (row.meta or {}):
                row.meta = {**(row.meta or {}), PAGE_OPENED_META: utcnow().isoformat()}
                db.commit()
    if refused is not None:
        refuse_entry(services.sessions, refused, "checkin_page", {"session_id": session_id})
        raise refused


def _refused_page(language: str, strings: dict[str, dict[str, str]], status: int) -> HTMLResponse:
    message = html_lib.escape(strings[language]["error.link"])
    body = f'<!doctype html><html lang="{language}"><meta charset="utf-8"><p>{message}</p></html>'
    return HTMLResponse(body, status_code=status, headers=_PAGE_HEADERS)


@router.get("/checkin/{token}", response_class=HTMLResponse)
async def checkin_page(token: str, request: Request, lang: str | None = None) -> HTMLResponse:
    """The page behind a one-time check-in link. The token is spent by POST /whip, not here.

    A revoked link, or one of a person no longer under supervision, answers 410 with a short page.
    """
    return await _link_page(token, request, lang, call=False)


@router.get("/call/{token}", response_class=HTMLResponse)
async def call_page(token: str, request: Request, lang: str | None = None) -> HTMLResponse:
    """The person's side of an officer's live call: the check-in page, which also shows the officer
    (WHEP, `POST /call/whep`) and keeps going until the officer ends the call."""
    return await _link_page(token, request, lang, call=True)


async def _link_page(token: str, request: Request, lang: str | None, *, call: bool) -> HTMLResponse:
    if not _TOKEN.match(token):
        raise BadInput("this is not a check-in link")
    language = pick_language(lang, request.headers.get("accept-language"))
    strings = load_strings()
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        try:
            await asyncio.to_thread(note_page_opened, services, token)
        except Gone:
            return _refused_page(language, strings, 410)
    # (After the life-cycle refusal above, which has its own page and audit line.) Say at once when the
    # link cannot be used, before the person grants camera, microphone and
    # location (the check spends nothing: POST /whip spends the token).
    reason = await _link_refusal(request, token)
    if reason is not None:
        page = (
            _environment()
            .get_template("checkin_invalid.html")
            .render(lang=language, t=strings[language], languages=LANGUAGES, reason=reason)
        )
        return HTMLResponse(page, status_code=404 if reason == "unknown" else 410, headers=_PAGE_HEADERS)
    config: dict[str, Any] = {
        "token": token,
        "whipUrl": "/whip",
        "language": language,
        "languages": list(LANGUAGES),
        "iceServers": [parse_ice_server(u) for u in _settings(request).media.ice_servers],
        "strings": strings,
        # While the page is open it reports the phone's position (media_server.location.page).
        "positionsUrl": "/page/positions",
        "positionEveryS": _settings(request).location.page_report_every_s,
        "call": call,
        "whepUrl": "/call/whep" if call else None,
    }
    html = (
        _environment()
        .get_template("checkin.html")
        .render(
            lang=language,
            t=strings[language],
            languages=LANGUAGES,
            call=call,
            # Embedded as a JSON data block (not executed); "</" is escaped so it cannot close the tag.
            config_json=json.dumps(config, ensure_ascii=False).replace("</", "<\\/"),
        )
    )
    return HTMLResponse(html, headers=_PAGE_HEADERS)


async def _link_refusal(request: Request, token: str) -> str | None:
    """Why this link cannot open a check-in now (a `LinkRefused.reason`), or None when it can."""
    ingest: WhipIngest | None = getattr(request.app.state, "whip_ingest", None)
    if ingest is None or token.startswith("dk_"):
        return None
    try:
        await ingest.authenticator.check(f"Bearer {token}")
    except LinkRefused as exc:
        return exc.reason if exc.reason in LINK_REASONS else "unknown"
    except Unauthorized:
        return "unknown"
    return None


@router.post("/page/positions", status_code=201)
async def page_positions(
    report: PageReport, request: Request, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """Positions from an open check-in or call page (its link is the bearer); stored in the person's track
    and judged against their zones. 401 for an unknown or closed link, 410 for a revoked one."""
    token = require_bearer(authorization)
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotFoundError("positions are not stored by this server")
    accepted = await submit_page_report(services, token, report, utcnow())
    return JSONResponse(accepted.to_dict(), status_code=201, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """The page's own assets (a fixed list: no directory is exposed)."""
    if name == "checkin_strings.json":
        return JSONResponse(load_strings(), headers={"Cache-Control": "no-cache"})
    media_type = _STATIC_FILES.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})
