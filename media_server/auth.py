"""Who is calling: staff logins with roles, one-time check-in tokens and AV-station device keys.

Every endpoint declares the roles it admits with `require(...)`; the user's role is read from the
database on each request, so a deactivated account stops working at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import Request
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from media_server.db import audit
from media_server.db.engine import read_only
from media_server.db.enums import DeviceKind, Role, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Device, RevokedToken, User
from media_server.db.types import utcnow
from media_server.errors import Forbidden, Gone, LinkRefused, TooManyRequests, Unauthorized
from media_server.lifecycle import require_active
from media_server.security import LoginThrottle
from media_server.services import Services
from media_server.tokens import bearer, check_password_or_dummy, sign_token, token_hash, verify_token

SESSION_COOKIE = "kuzet_session"


@dataclass(frozen=True)
class Principal:
    """An authenticated staff or person account."""

    user_id: str
    username: str
    role: Role
    person_id: str | None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"user:{self.username}"


def services_of(request: Request) -> Services:
    """The app's `Services`, built once in the lifespan."""
    services: Services = request.app.state.services
    return services


def require_bearer(header: str | None) -> str:
    """The token of a `Bearer` Authorization header; Unauthorized when absent or malformed."""
    if not header:
        raise Unauthorized("missing Authorization: Bearer credential")
    token = bearer(header)
    if token is None:
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token


def principal_from_request(request: Request) -> Principal:
    """The caller of a staff/person request (bearer header or the workstation cookie)."""
    token = bearer(request.headers.get("authorization")) or request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized("log in first: no credential was sent")
    services = services_of(request)
    claims = verify_token(services.keys.secret_key, token)
    # Read-only: on SQLite an authenticated request must not queue for the write lock.
    with services.sessions(bind=read_only(services.engine)) as db:
        user = db.get(User, claims.user_id)
        if user is None or not user.active:
            raise Unauthorized("this account does not exist or is deactivated")
        if db.get(RevokedToken, claims.jti) is not None:
            raise Unauthorized("this login was ended (logged out); log in again")
        return Principal(user_id=user.id, username=user.username, role=user.role, person_id=user.person_id)


@dataclass(frozen=True)
class LoginResult:
    """A successful login: the signed bearer token and the account's role."""

    token: str
    role: Role
    user_id: str


def password_login(
    services: Services,
    throttle: LoginThrottle,
    username: str,
    password: str,
    client_ip: str | None,
    *,
    via: str,
    ttl_s: int,
) -> LoginResult:
    """Check a username and password; Unauthorized (401) or TooManyRequests (429, backoff).

    The account is read in a read-only transaction and the argon2 check runs outside any transaction,
    so a login never holds SQLite's write lock while hashing; only the audit row is written, briefly.
    An unknown username costs the same argon2 work as a wrong password (no timing oracle)."""
    key = LoginThrottle.key(username, client_ip)
    wait_s = throttle.retry_after_s(key)
    if wait_s > 0:
        raise TooManyRequests(f"too many failed logins; try again in {math.ceil(wait_s)} s")
    with services.sessions(bind=read_only(services.engine)) as db:
        user = db.scalars(select(User).where(User.username == username)).one_or_none()
        found = (user.id, user.password_hash, user.role, user.active) if user is not None else None
    with throttle.hash_slots:
        matches = check_password_or_dummy(found[1] if found else None, password)
    ok = matches and found is not None and found[3]
    with services.sessions.begin() as db:
        # The attempt is committed to the audit log before the answer goes out.
        audit.append(
            db,
            actor=f"user:{username}",
            action="login" if ok else "login_failed",
            subject_type="user",
            subject_id=found[0] if found and ok else None,
            details={"via": via},
        )
    if not ok or found is None:
        throttle.failed(key)
        raise Unauthorized("wrong username or password")
    throttle.succeeded(key)
    user_id, _, role, _ = found
    return LoginResult(sign_token(services.keys.secret_key, user_id, role.value, ttl_s), role, user_id)


def revoke_token(services: Services, token: str | None, *, via: str) -> bool:
    """Logout: the token stops working now (its id is kept until it would have expired anyway).
    False when there was no valid token to end."""
    if not token:
        return False
    try:
        claims = verify_token(services.keys.secret_key, token)
    except Unauthorized:
        return False
    expires = datetime.fromtimestamp(claims.expires_at, UTC)
    with services.sessions.begin() as db:
        if db.get(RevokedToken, claims.jti) is not None:
            return False
        db.add(RevokedToken(jti=claims.jti, user_id=claims.user_id, expires_at=expires))
        # Rows past their token's expiry prove nothing any more.
        db.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        audit.append(
            db,
            actor=f"user-id:{claims.user_id}",
            action="logout",
            subject_type="user",
            subject_id=claims.user_id,
            details={"via": via},
        )
    return True


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency admitting only `roles` (401 without a login, 403 for another role)."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = principal_from_request(request)
        if principal.role not in allowed:
            raise Forbidden(
                f"role {principal.role.value!r} may not do this; needs one of: "
                + ", ".join(sorted(r.value for r in allowed))
            )
        request.state.principal = principal
        return principal

    return dependency


@dataclass(frozen=True, slots=True)
class WhipPrincipal:
    """Who opened a WHIP session: a person with a one-time link (`checkin`, or `call` for an officer's live
    call), or an AV station with its device key (`station`), and the session row that credential opened."""

    session_id: str
    person_id: str
    kind: Literal["checkin", "station", "call"]
    device_id: str | None = None
    challenge: dict[str, Any] | None = None


def check_whip(db: Session, authorization: str | None) -> None:
    """Raise Unauthorized unless `authorization` would open a session now; spends nothing.

    POST /whip calls this before it reads the offer, so a bogus credential costs no body upload."""
    token = bearer(authorization)
    if token is None:
        raise Unauthorized("a Bearer credential (check-in token or device key) is required")
    digest = token_hash(token)
    if token.startswith("dk_"):
        _station(db, digest)
        return
    row = db.scalars(select(CheckSession).where(CheckSession.token_hash == digest)).one_or_none()
    _refuse_inactive(db, row)
    problem = checkin_link_problem(row)
    if problem is not None:
        raise LinkRefused(problem.code, problem.message)


class StationKeyRevoked(Unauthorized):
    """A registered AV station's key that was deactivated (by an admin or the person's life cycle): 401
    like any unknown key, but the caller records the attempt against the station and its person."""

    def __init__(self, device_id: str, person_id: str | None) -> None:
        super().__init__("unknown or deactivated device key")
        self.device_id = device_id
        self.person_id = person_id


def _station(db: Session, digest: str) -> Device:
    """The active AV station with this key hash, assigned to a supervised person; raises otherwise."""
    device = db.scalars(select(Device).where(Device.key_hash == digest)).one_or_none()
    if device is None or device.kind is not DeviceKind.AV_STATION:
        raise Unauthorized("unknown or deactivated device key")
    if not device.active:
        raise StationKeyRevoked(device.id, device.person_id)
    if device.person_id is None:
        raise Unauthorized("this station is not assigned to a person")
    require_active(db, device.person_id)
    return device


@dataclass(frozen=True)
class LinkProblem:
    """Why a check-in link cannot be used now: a stable code and a sentence for the person."""

    code: str
    message: str


def _refuse_inactive(db: Session, row: CheckSession | None) -> None:
    """A link of a person no longer supervised (410, `lifecycle.PersonNotActive`) or revoked (410)."""
    if row is None:
        return
    require_active(db, row.person_id)
    if row.status is SessionStatus.CANCELLED:
        raise Gone("this check-in link was revoked; ask your officer for a new one")


def checkin_link_problem(row: CheckSession | None) -> LinkProblem | None:
    """None when the check-in session behind a link can be started now."""
    now = utcnow()
    if row is None:
        return LinkProblem("unknown", "unknown check-in link")
    if row.token_used_at is not None:
        return LinkProblem("used", "this check-in link was already used")
    if row.status is not SessionStatus.SCHEDULED:
        return LinkProblem("closed", "this check-in is no longer open")
    if now < row.window_start:
        return LinkProblem("not_yet", "this check-in is not open yet")
    if now > row.window_end:
        return LinkProblem("expired", "this check-in link has expired")
    return None


def release_whip(db: Session, principal: WhipPrincipal) -> None:
    """Undo `authenticate_whip` for a session whose offer failed in the media stack: a check-in link
    becomes usable again (nothing was received), a station session ends as a technical failure."""
    now = utcnow()
    if principal.kind == "station":
        db.execute(
            update(CheckSession)
            .where(CheckSession.id == principal.session_id, CheckSession.status == SessionStatus.ACTIVE)
            .values(status=SessionStatus.TECHNICAL_FAILURE, ended_at=now)
        )
        return
    db.execute(
        update(CheckSession)
        .where(CheckSession.id == principal.session_id, CheckSession.status == SessionStatus.ACTIVE)
        .values(token_used_at=None, status=SessionStatus.SCHEDULED, started_at=None)
    )


def authenticate_whip(db: Session, authorization: str | None, max_session_s: float) -> WhipPrincipal:
    """Spend a one-time check-in token, or open a station session for a device key; raises Unauthorized.

    A person whose supervision ended or who was erased is refused (`lifecycle.PersonNotActive`, 410)
    before anything is written; so is a link revoked by an officer's resend or by the life cycle (Gone).
    """
    token = bearer(authorization)
    if token is None:
        raise Unauthorized("a Bearer credential (check-in token or device key) is required")
    digest = token_hash(token)
    now = utcnow()
    if token.startswith("dk_"):
        device = _station(db, digest)
        assert device.person_id is not None
        row = CheckSession(
            person_id=device.person_id,
            kind=SessionKind.STATION,
            status=SessionStatus.ACTIVE,
            window_start=now,
            window_end=now + timedelta(seconds=max_session_s),
            started_at=now,
            device_id=device.id,
            meta={},
        )
        db.add(row)
        db.flush()
        return WhipPrincipal(row.id, row.person_id, "station", device.id, None)
    found = db.scalars(select(CheckSession).where(CheckSession.token_hash == digest)).one_or_none()
    _refuse_inactive(db, found)
    problem = checkin_link_problem(found)
    if problem is not None or found is None:
        raise Unauthorized(problem.message if problem else "unknown check-in link")
    row = found
    # Spend the token atomically: of two racing requests exactly one updates the row.
    spent = db.execute(
        update(CheckSession)
        .where(
            CheckSession.id == row.id,
            CheckSession.token_used_at.is_(None),
            CheckSession.status == SessionStatus.SCHEDULED,
        )
        .values(token_used_at=now, status=SessionStatus.ACTIVE, started_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise Unauthorized("this check-in link was already used")
    kind: Literal["checkin", "station", "call"] = (
        "station"
        if row.kind is SessionKind.STATION
        else "call"
        if row.kind is SessionKind.CALL
        else "checkin"
    )
    return WhipPrincipal(row.id, row.person_id, kind, row.device_id, row.challenge)
