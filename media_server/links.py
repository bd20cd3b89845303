"""One-time links: delivery to the agency's SMS/push gateway (with its outcome recorded), fresh links
after our failures, and the officer's resend.

The gateway receives a `checkin_due` webhook holding the link. Whether it accepted it is written to the
session (`meta.link.status`: delivered / failed / not_configured / handed_to_officer), because only a
window whose link reached the person can become a missed-test violation (`schedules.tick.mark_missed`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from media_server.db import audit
from media_server.db.enums import SessionStatus
from media_server.db.models import CheckSession
from media_server.db.types import utcnow
from media_server.errors import Conflict, NotFoundError
from media_server.lifecycle import REVOKED_META, require_active
from media_server.schedules.tick import (
    LINK_DELIVERED,
    LINK_FAILED,
    LINK_HANDED_TO_OFFICER,
    LINK_META,
    LINK_NOT_CONFIGURED,
    IssuedSession,
    issue_retake,
)
from media_server.services import Services
from media_server.webhooks import EventType, WebhookEvent

log = logging.getLogger("kuzet.links")

CHECKIN_PATH = "/checkin/"


def checkin_due_event(issued: IssuedSession) -> WebhookEvent:
    """The `checkin_due` event for a new link (its id is stable per session, for receivers' dedup)."""
    return WebhookEvent(
        EventType.CHECKIN_DUE,
        {
            "session_id": issued.session_id,
            "person_id": issued.person_id,
            "kind": issued.kind.value,
            "window_start": issued.window_start.isoformat(),
            "window_end": issued.window_end.isoformat(),
            "checkin_path": f"{CHECKIN_PATH}{issued.token}",
        },
        id=f"checkin_due-{issued.session_id}-{issued.token[-8:]}",
    )


def record_link_delivery(services: Services, session_id: str, status: str) -> None:
    """Write how the link reached (or failed to reach) the person; a failure never overwrites a success."""
    with services.sessions.begin() as db:
        row = db.get(CheckSession, session_id)
        if row is None:
            return
        current = ((row.meta or {}).get(LINK_META) or {}).get("status")
        if status in (LINK_FAILED, LINK_NOT_CONFIGURED) and current in (
            LINK_DELIVERED,
            LINK_HANDED_TO_OFFICER,
        ):
            return
        row.meta = {**(row.meta or {}), LINK_META: {"status": status, "at": utcnow().isoformat()}}
        audit.append(db, "system", "session.link_delivery", "session", session_id, {"status": status})


async def _send_and_record(services: Services, session_id: str, event: WebhookEvent) -> None:
    results = await services.notifier.send(event)
    status = LINK_DELIVERED if any(r.delivered for r in results) else LINK_FAILED
    await asyncio.to_thread(record_link_delivery, services, session_id, status)


async def deliver_link(services: Services, issued: IssuedSession) -> None:
    """Send the link to the gateway in the background; its outcome is recorded on the session."""
    if not services.notifier.enabled:
        log.warning(
            "no webhook configured: check-in link not delivered", extra={"session_id": issued.session_id}
        )
        await asyncio.to_thread(record_link_delivery, services, issued.session_id, LINK_NOT_CONFIGURED)
        return
    task = asyncio.create_task(_send_and_record(services, issued.session_id, checkin_due_event(issued)))
    services.background.append(task)
    task.add_done_callback(lambda t: services.background.remove(t) if t in services.background else None)


def resend_link(
    services: Services, session_id: str, *, actor: str, now: datetime | None = None
) -> IssuedSession:
    """An officer's resend: the old link is revoked at once and a new session with a fresh link opens now.

    A window that is still open keeps its end (at least `schedules.retake_window_min` from now); a closed
    one (missed, technical failure, completed) gets a new window. A session in progress is a Conflict; a
    person no longer supervised is refused (PersonNotActive, 410). The new link is returned to the officer
    (and is delivered to the gateway by the caller). Blocking.
    """
    now = now or utcnow()
    minimum = timedelta(minutes=services.settings.schedules.retake_window_min)
    with services.sessions() as db:
        row = db.get(CheckSession, session_id)
        if row is None:
            raise NotFoundError("no such session")
        require_active(db, row.person_id)
        if row.status is SessionStatus.ACTIVE:
            raise Conflict("this session is in progress; its link was used")
        still_open = row.status is SessionStatus.SCHEDULED and row.token_used_at is None
        duration = max(minimum, row.window_end - now) if still_open and row.window_end > now else minimum
        new_id = str(uuid.uuid4())
        if still_open:
            row.status = SessionStatus.CANCELLED
            row.ended_at = now
        row.meta = {
            **(row.meta or {}),
            REVOKED_META: {"at": now.isoformat(), "reason": "resent", "replaced_by": new_id},
        }
        if not still_open and row.token_used_at is None:
            row.token_hash = None  # a closed window keeps its status and verdict; its unused link dies
        audit.append(
            db,
            actor,
            "session.link_revoked",
            "session",
            session_id,
            {"reason": "resent", "replaced_by": new_id},
        )
        db.commit()
        issued = issue_retake(
            db,
            original_id=session_id,
            now=now,
            duration=duration,
            actor=actor,
            reason="resent_by_officer",
            session_id=new_id,
            link_status=LINK_HANDED_TO_OFFICER,
        )
    if issued is None:
        raise Conflict("a fresh link could not be issued for this session")
    return issued
