"""The phone check-in page: server-rendered, three languages, WebRTC via WHIP from checkin.js."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from media_server.errors import BadInput, NotFoundError
from media_server.i18n import checkin_strings
from media_server.settings import Settings
from media_server.webrtc.ice import parse_ice_server

router = APIRouter(tags=["checkin"])

PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
LANGUAGES = ("ru", "kk", "en")
DEFAULT_LANGUAGE = "ru"
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


@router.get("/checkin/{token}", response_class=HTMLResponse)
async def checkin_page(token: str, request: Request, lang: str | None = None) -> HTMLResponse:
    """The page behind a one-time check-in link. The token is spent by POST /whip, not here."""
    if not _TOKEN.match(token):
        raise BadInput("this is not a check-in link")
    language = pick_language(lang, request.headers.get("accept-language"))
    strings = load_strings()
    config: dict[str, Any] = {
        "token": token,
        "whipUrl": "/whip",
        "language": language,
        "languages": list(LANGUAGES),
        "iceServers": [parse_ice_server(u) for u in _settings(request).media.ice_servers],
        "strings": strings,
    }
    html = (
        _environment()
        .get_template("checkin.html")
        .render(
            lang=language,
            t=strings[language],
            languages=LANGUAGES,
            # Embedded as a JSON data block (not executed); "</" is escaped so it cannot close the tag.
            config_json=json.dumps(config, ensure_ascii=False).replace("</", "<\\/"),
        )
    )
    return HTMLResponse(html, headers=_PAGE_HEADERS)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """The page's own assets (a fixed list: no directory is exposed)."""
    if name == "checkin_strings.json":
        return JSONResponse(load_strings(), headers={"Cache-Control": "no-cache"})
    media_type = _STATIC_FILES.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})
