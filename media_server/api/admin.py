"""Accounts, supervised persons, devices and on-demand check-ins (admin and officer)."""

from __future__ import annotations

import base64
import binascii
from datetime import date, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from media_server.api.deps import AdminDep, OfficerDep, ReaderDep, ServicesDep
from media_server.auth import SESSION_COOKIE, password_login, revoke_token
from media_server.db import audit
from media_server.db.enums import DeviceKind, Role, SessionKind
from media_server.db.models import Device, Person, Schedule, User
from media_server.db.types import utcnow
from media_server.errors import BadInput, Conflict, NotFoundError, Unauthorized
from media_server.lifecycle import require_active, status_of
from media_server.schedules import parse_rule, request_on_demand, rule_to_json
from media_server.security import login_throttle
from media_server.tokens import bearer, hash_password, new_secret_token, token_hash
from sobriety.units import AlcoholUnit

router = APIRouter(prefix="/api/v1", tags=["admin"])

LOGIN_TTL_S = 8 * 3600
PAGE_DEFAULT = 50
PAGE_MAX = 500


def _insert_unique(db: Session, row: object, conflict: str) -> None:
    """Add and flush `row`; a unique-constraint clash becomes a 409 with `conflict` as its message."""
    db.add(row)
    try:
        db.flush()
    except DbIntegrityError as exc:
        raise Conflict(conflict) from exc


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LoginIn(_In):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginOut(BaseModel):
    token: str
    role: Role
    expires_in_s: int


@router.post("/auth/login", response_model=LoginOut, responses={429: {"description": "Login backoff"}})
def login(body: LoginIn, services: ServicesDep, request: Request, response: Response) -> LoginOut:
    """Exchange a username and password for a bearer token (also set as an HttpOnly cookie)."""
    client = request.client.host if request.client else None
    result = password_login(
        services,
        login_throttle(request.app.state),
        body.username,
        body.password,
        client,
        via="api",
        ttl_s=LOGIN_TTL_S,
    )
    response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict", max_age=LOGIN_TTL_S)
    return LoginOut(token=result.token, role=result.role, expires_in_s=LOGIN_TTL_S)


@router.post("/auth/logout", status_code=204)
def logout(services: ServicesDep, request: Request) -> Response:
    """End this login now: the bearer token (or workstation cookie) stops working before it expires."""
    token = bearer(request.headers.get("authorization")) or request.cookies.get(SESSION_COOKIE)
    if not revoke_token(services, token, via="api"):
        raise Unauthorized("no valid login to end")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


class UserIn(_In):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=10, max_length=256)
    role: Role
    person_id: str | None = None


@router.post("/users", status_code=201)
def create_user(body: UserIn, services: ServicesDep, who: AdminDep) -> dict[str, str]:
    """Create an account (admin only). Passwords are stored as argon2id hashes."""
    with services.sessions.begin() as db:
        if body.person_id is not None and db.get(Person, body.person_id) is None:
            raise NotFoundError("no such person")
        user = User(
            username=body.username,
            password_hash=hash_password(body.password),
            role=body.role,
            person_id=body.person_id,
        )
        _insert_unique(db, user, f"username {body.username!r} is taken")
        audit.append(
            db,
            actor=who.actor,
            action="user_created",
            subject_type="user",
            subject_id=user.id,
            details={"role": body.role.value},
        )
        return {"id": user.id, "username": user.username, "role": user.role.value}


class PersonIn(_In):
    external_ref: str = Field(min_length=1, max_length=64, description="Case number or registry id.")
    display_name: str = Field(min_length=1, max_length=200)
    timezone: str = Field("Asia/Almaty", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def person_view(p: Person) -> dict[str, Any]:
    """The public fields of a person."""
    return {
        "id": p.id,
        "external_ref": p.external_ref,
        "display_name": p.display_name,
        "timezone": p.timezone,
        "erased": p.erased_at is not None,
        "status": status_of(p).value,
        "supervision_ended_on": p.supervision_ended_on.isoformat() if p.supervision_ended_on else None,
        "retention_until": p.retention_until.isoformat() if p.retention_until else None,
    }


@router.post("/persons", status_code=201)
def create_person(body: PersonIn, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Register a person under supervision."""
    with services.sessions.begin() as db:
        person = Person(
            external_ref=body.external_ref, display_name=body.display_name, timezone=body.timezone
        )
        _insert_unique(db, person, f"a person with external_ref {body.external_ref!r} exists")
        audit.append(
            db,
            actor=who.actor,
            action="person_created",
            subject_type="person",
            subject_id=person.id,
            details={},
        )
        return person_view(person)


@router.get("/persons")
def list_persons(
    services: ServicesDep,
    who: ReaderDep,
    q: Annotated[str | None, Query(max_length=100, description="Part of the name or case number.")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Persons under supervision (erased ones left out), by name, a page at a time."""
    stmt = select(Person).where(Person.erased_at.is_(None))
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(or_(Person.display_name.ilike(like), Person.external_ref.ilike(like)))
    with services.sessions() as db:
        total = int(db.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        rows = db.scalars(stmt.order_by(Person.display_name, Person.id).offset(offset).limit(limit)).all()
        return {"items": [person_view(p) for p in rows], "total": total, "limit": limit, "offset": offset}


def _live_person(db: Session, person_id: str) -> Person:
    person = db.get(Person, person_id)
    if person is None or person.erased_at is not None:
        raise NotFoundError("no such person")
    return person


@router.get("/persons/{person_id}")
def get_person(person_id: str, services: ServicesDep, who: ReaderDep) -> dict[str, Any]:
    """One person with enrolment state, court order, devices and schedules."""
    from media_server.api.workstation import person_overview

    with services.sessions() as db:
        person = db.get(Person, person_id)
        if person is None:
            raise NotFoundError("no such person")
        if person.erased_at is not None:
            return person_view(person)
        overview = person_overview(db, person)
        enrolment = {
            k: None if v is None else {**v, "created_at": v["created_at"].isoformat()}
            for k, v in overview["enrolment"].items()
        }
        return {**person_view(person), **overview, "enrolment": enrolment}


@router.get("/persons/{person_id}/sessions")
def person_sessions(
    person_id: str,
    services: ServicesDep,
    who: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """A person's sessions, newest window first, each with its latest verdict's decision."""
    from media_server.api.workstation import person_sessions as sessions_of

    with services.sessions() as db:
        _live_person(db, person_id)
        rows = sessions_of(db, person_id, limit, offset)
        items = [
            {
                "id": s.id,
                "kind": s.kind.value,
                "status": s.status.value,
                "window_start": s.window_start.isoformat(),
                "window_end": s.window_end.isoformat(),
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "decision": v.decision.value if v else None,
                "verdict_id": v.id if v else None,
                "stage": (s.meta or {}).get("stage"),
                "episode_id": (s.meta or {}).get("episode_id"),
            }
            for s, v in rows
        ]
    return {"items": items, "limit": limit, "offset": offset}


@router.get("/persons/{person_id}/devices")
def person_devices(person_id: str, services: ServicesDep, who: ReaderDep) -> dict[str, Any]:
    """The stations registered to a person."""
    from media_server.api.workstation import person_overview

    with services.sessions() as db:
        person = _live_person(db, person_id)
        return {"items": person_overview(db, person)["devices"]}


class DeviceIn(_In):
    serial: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: DeviceKind
    person_id: str | None = None
    public_key_b64: str | None = Field(
        None, description="Breathalyzer or tracker: raw Ed25519 public key, base64."
    )
    calibrated_on: date | None = Field(
        None, description="Breathalyzer: date its sensor was last calibrated (service record)."
    )

    @field_validator("public_key_b64")
    @classmethod
    def _ed25519(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("public_key_b64 is not base64") from exc
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is exactly 32 bytes")
        return value


@router.post("/devices", status_code=201)
def register_device(body: DeviceIn, services: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Register a home station: a breathalyzer with its public key; an AV station gets a key, shown once."""
    if body.kind.signs_with_ed25519 and body.public_key_b64 is None:
        raise BadInput(f"a {body.kind.value} must be registered with its Ed25519 public key")
    device_key = new_secret_token("dk") if body.kind is DeviceKind.AV_STATION else None
    with services.sessions.begin() as db:
        if body.person_id is not None and db.get(Person, body.person_id) is None:
            raise NotFoundError("no such person")
        device = Device(
            serial=body.serial,
            kind=body.kind,
            person_id=body.person_id,
            public_key_b64=body.public_key_b64,
            key_hash=token_hash(device_key) if device_key else None,
            calibrated_on=body.calibrated_on,
        )
        _insert_unique(db, device, f"device {body.serial!r} is already registered")
        audit.append(
            db,
            actor=who.actor,
            action="device_registered",
            subject_type="device",
            subject_id=device.id,
            details={"kind": body.kind.value, "serial": body.serial},
        )
        out: dict[str, Any] = {"id": device.id, "serial": device.serial, "kind": device.kind.value}
    if device_key:
        out["device_key"] = device_key
    return out


class OrderIn(_In):
    brac_limit: float = Field(ge=0, le=10, description="The order's alcohol limit (0 = absolute abstinence).")
    unit: AlcoholUnit = Field(description="g/210L, mg/L (breath) or g/100mL, permille (blood; converted).")


@router.put("/persons/{person_id}/order")
def set_order(person_id: str, body: OrderIn, services: ServicesDep, who: OfficerDep) -> dict[str, Any]:
    """Record the court order's alcohol limit that breath readings are judged against (audited)."""
    with services.sessions.begin() as db:
        person = db.get(Person, person_id)
        if person is None or person.erased_at is not None:
            raise NotFoundError("no such person")
        person.order_brac_limit = body.brac_limit
        person.order_brac_unit = body.unit.value
        audit.append(
            db,
            actor=who.actor,
            action="order_limit_set",
            subject_type="person",
            subject_id=person_id,
            details={"brac_limit": body.brac_limit, "unit": body.unit.value},
        )
        return {**person_view(person), "order": {"brac_limit": body.brac_limit, "unit": body.unit.value}}


def _not_a_call(kind: SessionKind) -> SessionKind:
    if kind is SessionKind.CALL:
        raise ValueError("a call is started by an officer: POST /api/v1/persons/{id}/calls")
    return kind


class CheckinIn(_In):
    kind: SessionKind = SessionKind.CHECKIN
    window_minutes: int = Field(30, ge=1, le=24 * 60, description="How long the one-time link stays valid.")

    _kind = field_validator("kind")(_not_a_call)


@router.post("/persons/{person_id}/checkins", status_code=201)
def request_checkin(
    person_id: str, body: CheckinIn, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """An on-demand test: opens a window now and returns the one-time check-in link (shown once)."""
    with services.sessions.begin() as db:
        try:
            issued = request_on_demand(
                db,
                person_id=person_id,
                kind=body.kind,
                now=utcnow(),
                duration=timedelta(minutes=body.window_minutes),
                requested_by=who.actor,
            )
        except LookupError as exc:
            raise NotFoundError("no such person") from exc
    return {
        "session_id": issued.session_id,
        "token": issued.token,
        "url": f"/checkin/{issued.token}",
        "window_end": issued.window_end.isoformat(),
    }


class ScheduleIn(_In):
    kind: SessionKind = SessionKind.CHECKIN
    rule: dict[str, Any] = Field(description="daily / random / on_demand rule (see media_server.schedules).")

    _kind = field_validator("kind")(_not_a_call)


@router.post("/persons/{person_id}/schedules", status_code=201)
def create_schedule(
    person_id: str, body: ScheduleIn, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Fixed daily windows or random tests, read in the person's time zone."""
    try:
        rule = rule_to_json(parse_rule(body.rule))
    except (ValueError, TypeError) as exc:
        raise BadInput(f"invalid schedule rule: {exc}") from exc
    with services.sessions.begin() as db:
        person = require_active(db, person_id)  # 404, or 410 once supervision ended
        row = Schedule(
            person_id=person_id, kind=body.kind, rule=rule, timezone=person.timezone, created_by=who.user_id
        )
        db.add(row)
        db.flush()
        audit.append(
            db,
            actor=who.actor,
            action="schedule_created",
            subject_type="schedule",
            subject_id=row.id,
            details={"kind": body.kind.value, "rule": rule},
        )
        return {
            "id": row.id,
            "person_id": person_id,
            "kind": row.kind.value,
            "rule": rule,
            "timezone": row.timezone,
        }
