"""Location monitoring API: signed positions and device events from trackers; zones and alerts for officers.

* `POST /api/v1/positions`, `POST /api/v1/device-events` - a tracker (a person's phone app or a bracelet /
  home-unit gateway registered as a device of kind `tracker` with its Ed25519 key) posts
  `{"batch": "<canonical JSON>", "signature": "<base64>"}` (media_server.location.signed). No login: the
  signature authenticates. 201 with the stored ids and any alerts raised; 400 malformed, 401 unknown or
  revoked tracker or a forged signature, 409 a replayed nonce, 413 too large, 422 stale, future or too
  old, or a tracker not assigned to a person.
* `POST/GET /api/v1/persons/{id}/zones`, `DELETE /api/v1/persons/{id}/zones/{zone_id}` - officers.
* `GET /api/v1/alerts` - violations and technical alerts, newest first (staff who read cases).
* `GET /api/v1/persons/{id}/positions` - the person's stored fixes in a time range (audited read).
* Workstation pages (`pages`): `/ws/alerts` (the alerts list) and `/ws/persons/{id}/location` (zones, track
  and the fixes proving violations as an inline SVG map drawn without tiles; an audited read).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from media_server.api.deps import OfficerDep, ReaderDep, ServicesDep
from media_server.api.workstation import _page as workstation_page
from media_server.api.workstation import _viewer
from media_server.auth import Principal
from media_server.db import audit
from media_server.db.enums import AlertKind, AlertSource, ZoneKind
from media_server.db.models import LocationAlert, LocationZone, Person, Position
from media_server.db.types import utcnow
from media_server.errors import BadInput, NotFoundError, TooLarge
from media_server.i18n import LANGS
from media_server.lifecycle import require_active
from media_server.location import store
from media_server.location.chain import as_fix
from media_server.location.flow import Accepted, submit_events, submit_positions
from media_server.location.mapview import render_svg
from media_server.location.signed import Refused
from media_server.location.zones import ZoneError

router = APIRouter(prefix="/api/v1", tags=["location"])
pages = APIRouter(prefix="/ws", tags=["workstation"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))

ClockDep = Annotated[datetime, Depends(utcnow)]
ALERTS_PAGE_MAX = 500
POSITIONS_PAGE_MAX = 10_000


async def _body(request: Request, max_bytes: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise TooLarge(f"a batch request is at most {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise TooLarge(f"a batch request is at most {max_bytes} bytes")
    return bytes(body)


def _answer(outcome: Accepted | Refused) -> JSONResponse:
    if isinstance(outcome, Accepted):
        return JSONResponse(outcome.to_dict(), status_code=201)
    return JSONResponse(
        {"error": outcome.code, "message": outcome.message, "details": list(outcome.details)},
        status_code=outcome.status,
    )


_DEVICE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed envelope or batch, weak nonce, too many items"},
    401: {"description": "Unknown or revoked tracker, or a signature that does not verify"},
    409: {"description": "Replayed nonce"},
    413: {"description": "Request too large"},
    422: {"description": "Stale or future batch, items too old or in the future, tracker unassigned"},
}


@router.post("/positions", status_code=201, responses=_DEVICE_RESPONSES)
async def post_positions(request: Request, services: ServicesDep, now: ClockDep) -> JSONResponse:
    """A signed batch of position fixes (any order, late accepted); violations are evaluated at once."""
    body = await _body(request, services.settings.location.max_body_bytes)
    return _answer(await submit_positions(services, body, now))


@router.post("/device-events", status_code=201, responses=_DEVICE_RESPONSES)
async def post_device_events(request: Request, services: ServicesDep, now: ClockDep) -> JSONResponse:
    """A signed batch of device events; alerts follow the policy table (media_server.location.policy)."""
    body = await _body(request, services.settings.location.max_body_bytes)
    return _answer(await submit_events(services, body, now))


class ZoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: ZoneKind
    label: str = Field(min_length=1, max_length=200)
    geometry: dict[str, Any] = Field(
        description='{"type": "circle", "lat", "lon", "radius_m"} or {"type": "polygon", "coordinates": '
        "[[lon, lat], ...]} (WGS 84 degrees)."
    )
    hours: dict[str, str] | None = Field(
        None, description='{"start": "22:00", "end": "06:00"} in the person\'s time zone; omit for always.'
    )


def _live_person(services: ServicesDep, person_id: str) -> None:
    with services.sessions() as db:
        person = db.get(Person, person_id)
        if person is None or person.erased_at is not None:
            raise NotFoundError("no such person")


@router.post("/persons/{person_id}/zones", status_code=201)
def create_zone(person_id: str, body: ZoneIn, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Add an inclusion or exclusion zone (audited). Positions already stored are judged from now on.

    410 `person_not_active` once supervision ended: a zone is new personal data (often a third party's
    address) that no position will ever be judged against.
    """
    with services.sessions.begin() as db:
        require_active(db, person_id)
        try:
            row = store.create_zone(
                db,
                person_id=person_id,
                kind=body.kind,
                label=body.label,
                geometry=body.geometry,
                hours=body.hours,
                created_by=who.user_id,
                settings=services.settings.location,
            )
        except ZoneError as exc:
            raise BadInput(str(exc)) from exc
        audit.append(
            db,
            actor=who.actor,
            action="zone_created",
            subject_type="zone",
            subject_id=row.id,
            details={"person_id": person_id, "kind": body.kind.value},
        )
        return store.zone_view(row)


@router.get("/persons/{person_id}/zones")
def list_zones(
    person_id: str, services: ServicesDep, who: ReaderDep, include_deleted: bool = False
) -> dict[str, Any]:
    """The person's zones (deleted ones too with `include_deleted=true`)."""
    _live_person(services, person_id)
    with services.sessions() as db:
        query = select(LocationZone).where(LocationZone.person_id == person_id)
        if not include_deleted:
            query = query.where(LocationZone.deleted_at.is_(None))
        rows = db.scalars(query.order_by(LocationZone.created_at)).all()
        return {"zones": [store.zone_view(r) for r in rows]}


@router.delete("/persons/{person_id}/zones/{zone_id}")
def delete_zone(person_id: str, zone_id: str, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Stop applying a zone (kept for the alerts raised under it; audited)."""
    with services.sessions.begin() as db:
        row = db.get(LocationZone, zone_id)
        if row is None or row.person_id != person_id or row.deleted_at is not None:
            raise NotFoundError("no such zone")
        row.deleted_at = utcnow()
        audit.append(
            db,
            actor=who.actor,
            action="zone_deleted",
            subject_type="zone",
            subject_id=zone_id,
            details={"person_id": person_id},
        )
        return store.zone_view(row)


@router.get("/alerts")
def get_alerts(
    services: ServicesDep,
    who: ReaderDep,
    person_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: AlertKind | None = None,
    source: AlertSource | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=ALERTS_PAGE_MAX)] = 100,
) -> dict[str, Any]:
    """Violations and technical alerts from zones and device events, newest first."""
    if since is not None and since.tzinfo is None:
        raise BadInput("`since` needs a time zone offset, e.g. 2026-12-03T10:00:00Z")
    with services.sessions() as db:
        rows = store.list_alerts(db, person_id=person_id, kind=kind, source=source, since=since, limit=limit)
        return {"alerts": [store.alert_view(r) for r in rows]}


@router.get("/persons/{person_id}/positions")
def get_positions(
    person_id: str,
    services: ServicesDep,
    who: ReaderDep,
    since: datetime,
    until: datetime,
    limit: Annotated[int, Query(ge=1, le=POSITIONS_PAGE_MAX)] = 1000,
) -> dict[str, Any]:
    """The person's fixes with `since <= t <= until` in time order (the read is audited)."""
    if since.tzinfo is None or until.tzinfo is None:
        raise BadInput("`since` and `until` need a time zone offset, e.g. 2026-12-03T10:00:00Z")
    if until < since:
        raise BadInput("`until` is before `since`")
    _live_person(services, person_id)
    with services.sessions.begin() as db:
        rows = db.scalars(
            select(Position)
            .where(Position.person_id == person_id, Position.t >= since, Position.t <= until)
            .order_by(Position.t, Position.id)
            .limit(limit)
        ).all()
        audit.append(
            db,
            actor=who.actor,
            action="positions_viewed",
            subject_type="person",
            subject_id=person_id,
            details={"since": since.isoformat(), "until": until.isoformat(), "rows": len(rows)},
        )
        return {"positions": [store.position_view(r) for r in rows]}


# ------------------------------------------------------------------------------------- workstation pages
MAP_DEFAULT_HOURS = 24
MAP_MAX_FIXES = 5000
MAP_CONTEXT_MIN = 30  # an alert's map link shows this much before and after it
STRINGS = {
    "en": {
        "alerts": "Location alerts",
        "no_alerts": "No alerts.",
        "when": "When",
        "person": "Person",
        "kind": "Kind",
        "what": "What",
        "map": "map",
        "map_of": "Location of",
        "since": "from",
        "until": "to",
        "show": "Show",
        "fixes": "fixes",
        "violation": "violation",
        "technical": "technical",
        "legend": "Green: inclusion zones; red: exclusion zones; red dots with dashed accuracy circles: "
        "fixes proving a violation",
    },
    "ru": {
        "alerts": "Тревоги по местоположению",
        "no_alerts": "Тревог нет.",
        "when": "Когда",
        "person": "Лицо",
        "kind": "Вид",
        "what": "Что",
        "map": "карта",
        "map_of": "Местоположение:",
        "since": "с",
        "until": "по",
        "show": "Показать",
        "fixes": "точек",
        "violation": "нарушение",
        "technical": "техническая",
        "legend": "Зелёные: зоны присутствия; красные: запретные зоны; красные "
        "точки с пунктирным кругом точности: точки, доказывающие нарушение",
    },
}


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("kuzet_lang") or "ru"
    return lang if lang in LANGS else "ru"


def _render(request: Request, principal: Principal, **context: Any) -> HTMLResponse:
    # the workstation's page frame (language, navigation, catalogs), with this page's own strings
    return workstation_page(request, "location.html", principal, s=STRINGS[_lang(request)], **context)


def _alert_rows(db: Any, rows: Any) -> list[dict[str, Any]]:
    names = {
        p.id: p.display_name
        for p in db.scalars(select(Person).where(Person.id.in_({r.person_id for r in rows})))
    }
    context = timedelta(minutes=MAP_CONTEXT_MIN)
    return [
        {
            "person_id": r.person_id,
            "person": names.get(r.person_id, r.person_id),
            "kind": r.kind.value,
            "message": r.message,
            "started_at": r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "ended_at": r.ended_at.strftime("%H:%M:%S"),
            "since": (r.started_at - context).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": (r.ended_at + context).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for r in rows
    ]


@pages.get("/alerts", response_model=None)
def alerts_page(request: Request, services: ServicesDep) -> Response:
    """Newest location alerts of every person."""
    principal = _viewer(request)
    if isinstance(principal, RedirectResponse):
        return principal
    with services.sessions() as db:
        rows = store.list_alerts(
            db, person_id=None, kind=None, source=None, since=None, limit=ALERTS_PAGE_MAX
        )
        return _render(request, principal, person=None, alerts=_alert_rows(db, rows))


def _aware(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"not an ISO 8601 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise BadInput("times need a time zone offset, e.g. 2026-12-03T10:00:00Z")
    return parsed


@pages.get("/persons/{person_id}/location", response_model=None)
def location_page(
    request: Request,
    person_id: str,
    services: ServicesDep,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """A person's zones, track and violations between `since` and `until` (default: the last 24 h)."""
    principal = _viewer(request)
    if isinstance(principal, RedirectResponse):
        return principal
    end = _aware(until, utcnow())
    start = _aware(since, end - timedelta(hours=MAP_DEFAULT_HOURS))
    if end < start:
        raise BadInput("`until` is before `since`")
    with services.sessions.begin() as db:
        person = db.get(Person, person_id)
        if person is None or person.erased_at is not None:
            raise NotFoundError("no such person")
        zones = store.active_zones(db, person_id, services.settings.location)
        rows = db.scalars(
            select(Position)
            .where(Position.person_id == person_id, Position.t >= start, Position.t <= end)
            .order_by(Position.t, Position.id)
            .limit(MAP_MAX_FIXES)
        ).all()
        alerts = db.scalars(
            select(LocationAlert)
            .where(
                LocationAlert.person_id == person_id,
                LocationAlert.started_at <= end,
                LocationAlert.ended_at >= start,
            )
            .order_by(LocationAlert.started_at.desc())
        ).all()
        proof = {int(i) for a in alerts for i in a.position_ids}
        audit.append(
            db,
            actor=principal.actor,
            action="positions_viewed",
            subject_type="person",
            subject_id=person_id,
            details={"since": start.isoformat(), "until": end.isoformat(), "rows": len(rows), "via": "map"},
        )
        return _render(
            request,
            principal,
            person=person,
            svg=render_svg(zones, [as_fix(r) for r in rows], proof),
            fixes=len(rows),
            since=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            until=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            alerts=_alert_rows(db, alerts),
        )
