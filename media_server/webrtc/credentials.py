"""Who may open a WHIP session. The lead's `media_server.auth.authenticate_whip` is the real one;
`WhipAuthenticator` is the port, so tests can use a fake."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Literal, Protocol

from media_server.auth import StationKeyRevoked, WhipPrincipal, require_bearer
from media_server.db import audit
from media_server.db.models import Person
from media_server.errors import LinkRefused, Unauthorized
from media_server.lifecycle import PersonNotActive, refuse_entry, status_of
from media_server.services import Services


class WhipAuthenticator(Protocol):
    """Turns an Authorization header into a principal; raises Unauthorized for a missing, bad,
    expired or reused credential."""

    async def check(self, authorization: str | None) -> None:
        """Raise Unauthorized unless the credential would open a session now; spends nothing."""
        ...

    async def authenticate(self, authorization: str | None) -> WhipPrincipal:
        """Spend the credential and open its session."""
        ...

    async def release(self, principal: WhipPrincipal) -> None:
        """Undo `authenticate` after the media stack refused the offer (nothing was received)."""
        ...


def _refuse_revoked_station(services: Services, refused: StationKeyRevoked) -> None:
    """An audit line for a deactivated station key that knocked (a station left running after the
    person's supervision ended or erasure, or a key in the wrong hands); nothing else is stored."""
    with services.sessions.begin() as db:
        person = db.get(Person, refused.person_id) if refused.person_id else None
        audit.append(
            db,
            "system",
            "entry_refused",
            "person" if person is not None else "device",
            person.id if person is not None else refused.device_id,
            {
                "entry": "whip",
                "code": "station_key_revoked",
                "device_id": refused.device_id,
                "status": status_of(person).value if person is not None else None,
            },
        )


class ServicesAuthenticator:
    """Adapter to the lead's `media_server.auth.authenticate_whip(db, header, max_session_s)`:
    one database transaction per attempt (the token is spent when it commits)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def _authenticate(self, authorization: str | None) -> WhipPrincipal:
        from media_server import auth

        max_session_s = self._services.settings.media.max_session_s
        try:
            with self._services.sessions.begin() as db:
                result = auth.authenticate_whip(db, authorization, max_session_s)
        except PersonNotActive as refused:
            # Nothing of the attempt is kept but this line (the transaction above rolled back).
            refuse_entry(self._services.sessions, refused, "whip", {})
            raise
        except StationKeyRevoked as revoked:
            _refuse_revoked_station(self._services, revoked)
            raise
        return result

    async def authenticate(self, authorization: str | None) -> WhipPrincipal:
        # It reads and writes the database: keep it off the event loop.
        return await asyncio.to_thread(self._authenticate, authorization)

    def _check(self, authorization: str | None) -> None:
        from media_server import auth

        try:
            with self._services.sessions() as db:
                auth.check_whip(db, authorization)
        except PersonNotActive as refused:
            refuse_entry(self._services.sessions, refused, "whip", {})
            raise
        except StationKeyRevoked as revoked:
            _refuse_revoked_station(self._services, revoked)
            raise

    async def check(self, authorization: str | None) -> None:
        await asyncio.to_thread(self._check, authorization)

    def _release(self, principal: WhipPrincipal) -> None:
        from media_server import auth

        with self._services.sessions.begin() as db:
            auth.release_whip(db, principal)

    async def release(self, principal: WhipPrincipal) -> None:
        await asyncio.to_thread(self._release, principal)


class OneTimeTokens:
    """In-memory authenticator: each issued token opens exactly one session (tests, benchmarks)."""

    def __init__(self) -> None:
        self._issued: dict[str, WhipPrincipal] = {}
        self._spent: dict[str, str] = {}  # session id -> its token, for `release`
        self.used: set[str] = set()

    def issue(
        self,
        person_id: str = "person-test",
        *,
        kind: Literal["checkin", "station"] = "checkin",
        challenge: dict[str, Any] | None = None,
    ) -> str:
        """A fresh token for a new session of `person_id`."""
        token = secrets.token_urlsafe(24)
        self._issued[token] = WhipPrincipal(
            session_id=secrets.token_hex(8),
            person_id=person_id,
            kind=kind,
            device_id="station-test" if kind == "station" else None,
            challenge=challenge,
        )
        return token

    async def check(self, authorization: str | None) -> None:
        token = require_bearer(authorization)
        if token not in self._issued:
            if token in self.used:
                raise LinkRefused("used", "credential already used")
            raise LinkRefused("unknown", "unknown credential")

    async def authenticate(self, authorization: str | None) -> WhipPrincipal:
        token = require_bearer(authorization)
        principal = self._issued.pop(token, None)
        if principal is None:
            raise Unauthorized("credential already used" if token in self.used else "unknown credential")
        self.used.add(token)
        self._spent[principal.session_id] = token
        return principal

    async def release(self, principal: WhipPrincipal) -> None:
        token = self._spent.pop(principal.session_id, None)
        if token is not None:
            self.used.discard(token)
            self._issued[token] = principal
