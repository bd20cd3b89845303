"""Admin pages of the workstation: webhook dead letters (list and retry). Kept beside the reviewer pages
(`api/workstation.py`) so the two can change independently; same login, cookie and templates."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from media_server.api.deps import ServicesDep
from media_server.api.workstation import _lang, _page, _viewer
from media_server.auth import Principal
from media_server.db.enums import Role
from media_server.dead_letters import NotRetryable, dead_letter_view, list_dead_letters, retry_dead_letter
from media_server.errors import Forbidden

router = APIRouter(prefix="/ws", tags=["workstation"], include_in_schema=False)

# Confirmation banners a redirect may ask for, by key (the template holds their text).
FLASHES = frozenset({"delivered", "failed"})


def _admin(request: Request) -> Principal | RedirectResponse:
    who = _viewer(request)
    if isinstance(who, Principal) and who.role is not Role.ADMIN:
        raise Forbidden("only an admin sees webhook dead letters")
    return who


@router.get("/dead-letters", response_model=None)
def dead_letters_page(request: Request, services: ServicesDep) -> Response:
    who = _admin(request)
    if isinstance(who, RedirectResponse):
        return who
    with services.sessions() as db:
        rows = [dead_letter_view(r) for r in list_dead_letters(db)]
    asked = request.query_params.get("flash", "")
    flash = asked if asked in FLASHES else None
    return _page(request, "dead_letters.html", who, rows=rows, flash=flash)


@router.post("/dead-letters/{letter_id}/retry", response_model=None)
async def dead_letter_retry(letter_id: str, request: Request, services: ServicesDep) -> Response:
    who = _admin(request)
    if isinstance(who, RedirectResponse):
        return who
    try:
        outcome = await retry_dead_letter(services.sessions, services.notifier, letter_id, actor=who.actor)
    except NotRetryable:
        outcome = None
    flash = "delivered" if outcome is not None and outcome.delivered else "failed"
    return RedirectResponse(f"/ws/dead-letters?lang={_lang(request)}&flash={flash}", status_code=303)
