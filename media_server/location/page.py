"""Positions reported by an open check-in or call page (the browser's geolocation, with its accuracy).

The page has no signing key: its one-time link is its credential, valid while its session is open or in
progress and for `location.page_report_grace_s` after it ended. Fixes join the person's hash-chained track
(source `checkin`) and are judged against their zones like any other (`store.record_checkin_fixes`). A page
whose geolocation is denied or fails simply reports nothing: a technical failure never raises a violation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from media_server.db.enums import PositionSource, SessionKind, SessionStatus
from media_server.db.models import CheckSession
from media_server.errors import BadInput, Gone, Unauthorized
from media_server.lifecycle import require_active
from media_server.location.chain import NewFix
from media_server.location.flow import announce
from media_server.location.store import NewAlert, record_checkin_fixes
from media_server.services import Services
from media_server.tokens import token_hash

# The page kinds whose link may report positions.
_PAGE_KINDS = (SessionKind.CHECKIN, SessionKind.CALL)


class PageFix(BaseModel):
    """One browser fix: its time (ms since the epoch, as `GeolocationPosition.timestamp`), degrees, metres."""

    model_config = ConfigDict(extra="forbid")

    t_ms: int = Field(ge=0, le=10**14)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)


class PageReport(BaseModel):
    """A page's report: one or more fixes (at most `location.page_max_fixes`)."""

    model_config = ConfigDict(extra="forbid")

    fixes: list[PageFix] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class PageAccepted:
    """How many fixes were stored for which session, and the alerts they raised."""

    session_id: str
    accepted: int
    alerts: tuple[NewAlert, ...]

    def to_dict(self) -> dict[str, object]:
        """The 201 response body."""
        return {
            "session_id": self.session_id,
            "accepted": self.accepted,
            "alerts": [{"id": a.id, "kind": a.kind.value, "code": a.code} for a in self.alerts],
        }


def _page_session(row: CheckSession | None, now: datetime, grace: timedelta) -> CheckSession:
    if row is None or row.kind not in _PAGE_KINDS:
        raise Unauthorized("unknown check-in or call link")
    if row.status is SessionStatus.CANCELLED:
        raise Gone("this link was revoked")
    if row.status is SessionStatus.ACTIVE:
        return row
    if row.status is SessionStatus.SCHEDULED and row.window_start <= now <= row.window_end:
        return row
    if row.ended_at is not None and now - row.ended_at <= grace:
        return row
    raise Unauthorized("this link's session is closed: positions are no longer accepted")


def _fixes(report: PageReport, row: CheckSession, now: datetime, services: Services) -> list[NewFix]:
    cfg = services.settings.location
    if len(report.fixes) > cfg.page_max_fixes:
        raise BadInput(f"a page report holds at most {cfg.page_max_fixes} positions")
    earliest = row.window_start - timedelta(seconds=cfg.page_report_grace_s)
    latest = now + timedelta(seconds=cfg.page_max_clock_skew_s)
    out: list[NewFix] = []
    for fix in report.fixes:
        t = datetime.fromtimestamp(fix.t_ms / 1000, UTC)
        if not earliest <= t <= latest:
            raise BadInput("a position's time lies outside this session (check the phone's clock)")
        out.append(
            NewFix(t=t, lat=fix.lat, lon=fix.lon, accuracy_m=fix.accuracy_m, source=PositionSource.CHECKIN)
        )
    return sorted(out, key=lambda f: f.t)


def store_page_report(services: Services, token: str, report: PageReport, now: datetime) -> PageAccepted:
    """Check the link, store the fixes in the person's chain and judge them; one transaction. Blocking."""
    grace = timedelta(seconds=services.settings.location.page_report_grace_s)
    with services.sessions.begin() as db:
        found = db.scalars(
            select(CheckSession).where(CheckSession.token_hash == token_hash(token))
        ).one_or_none()
        row = _page_session(found, now, grace)
        require_active(db, row.person_id)
        fixes = _fixes(report, row, now, services)
        alerts = record_checkin_fixes(db, row.person_id, fixes, now, services.settings.location)
        return PageAccepted(row.id, len(fixes), tuple(alerts))


async def submit_page_report(
    services: Services, token: str, report: PageReport, now: datetime
) -> PageAccepted:
    """`store_page_report` off the event loop, then the alerts' webhooks."""
    accepted = await asyncio.to_thread(store_page_report, services, token, report, now)
    announce(services, list(accepted.alerts))
    return accepted
