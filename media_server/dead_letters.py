"""Webhook dead letters: deliveries that failed for good, stored with their exact body for admins.

`DbDeadLetters` is the notifier's `DeadLetterSink` (each stored letter is counted in
`kuzet_webhook_dead_letters_total{event}`); `list_dead_letters` and `retry_dead_letter` serve the admin
API (`GET /api/v1/webhooks/dead-letters`, `POST .../{id}/retry`). A retry sends the same body (same event
id, so a receiver drops a duplicate) to the same URL; success marks the letter resolved.

A `checkin_due` letter is stored without its link: only the token's hash may be kept, so the database
never holds a usable credential. Its remedy is the officer's resend (`POST /api/v1/sessions/{id}/
resend-link`), not a retry.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from media_server.db import audit
from media_server.db.models import WebhookDeadLetter
from media_server.db.types import utcnow
from media_server.webhooks import DeliveryResult, WebhookNotifier

ERROR_MAX_CHARS = 2000
CHECKIN_DUE = "checkin_due"
LINK_FIELD = "checkin_path"


class NotRetryable(Exception):
    """A dead letter that must not be sent again as stored (a redacted check-in link)."""


def _redacted(event_type: str, body: bytes) -> str:
    """The body to store: a `checkin_due` event loses its one-time link."""
    text = body.decode("utf-8")
    if event_type != CHECKIN_DUE:
        return text
    payload = json.loads(text)
    data = payload.get("data") or {}
    if LINK_FIELD in data:
        data[LINK_FIELD] = None
        data["link_redacted"] = True
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


class DbDeadLetters:
    """Stores dead letters in `webhook_dead_letters` and counts them."""

    def __init__(self, sessions: sessionmaker[Session], counter: Counter | None = None) -> None:
        self._sessions = sessions
        self._counter = counter

    def record(self, event_id: str, event_type: str, body: bytes, result: DeliveryResult) -> None:
        """Store one failed delivery (blocking) and write an audit line."""
        with self._sessions.begin() as db:
            row = WebhookDeadLetter(
                event_id=event_id,
                event_type=event_type,
                url=result.url,
                body=_redacted(event_type, body),
                attempts=result.attempts,
                last_status=result.status,
                last_error=(result.error or "")[:ERROR_MAX_CHARS] or None,
            )
            db.add(row)
            db.flush()
            audit.append(
                db,
                "webhooks",
                "webhook.dead_letter",
                "webhook_dead_letter",
                row.id,
                {"event_id": event_id, "event_type": event_type, "attempts": result.attempts},
            )
        if self._counter is not None:
            self._counter.labels(event_type).inc()


def dead_letter_view(row: WebhookDeadLetter) -> dict[str, Any]:
    """What an admin sees of a dead letter (the body holds ids and decisions, no biometric data)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "url": row.url,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "retries": row.retries,
        "created_at": iso(row.created_at),
        "retried_at": iso(row.retried_at),
        "resolved_at": iso(row.resolved_at),
        "body": row.body,
    }


def list_dead_letters(db: Session, *, include_resolved: bool = False) -> list[WebhookDeadLetter]:
    """Dead letters, oldest first; unresolved only unless asked."""
    query = select(WebhookDeadLetter).order_by(WebhookDeadLetter.created_at, WebhookDeadLetter.id)
    if not include_resolved:
        query = query.where(WebhookDeadLetter.resolved_at.is_(None))
    return list(db.scalars(query).all())


@dataclass(frozen=True)
class RetryOutcome:
    """What one retry of a dead letter did."""

    letter: dict[str, Any]
    delivered: bool
    status: int | None
    error: str | None


async def retry_dead_letter(
    sessions: sessionmaker[Session], notifier: WebhookNotifier, letter_id: str, *, actor: str
) -> RetryOutcome | None:
    """Send a dead letter again (with the notifier's retries); None when there is no such letter.

    NotRetryable for a `checkin_due` letter (its link was not stored: resend the session's link).
    """

    def load() -> tuple[str, str, str, str] | None:
        with sessions() as db:
            row = db.get(WebhookDeadLetter, letter_id)
            return None if row is None else (row.url, row.body, row.event_type, row.event_id)

    loaded = await asyncio.to_thread(load)
    if loaded is None:
        return None
    url, body, event_type, event_id = loaded
    if event_type == CHECKIN_DUE:
        raise NotRetryable("a check-in link is not stored; resend the session's link instead")
    result = await notifier.redeliver(url, body.encode("utf-8"), event_type, event_id)

    def save() -> dict[str, Any]:
        with sessions.begin() as db:
            row = db.get_one(WebhookDeadLetter, letter_id)
            now = utcnow()
            row.retries += 1
            row.retried_at = now
            row.attempts += result.attempts
            row.last_status = result.status
            row.last_error = (result.error or "")[:ERROR_MAX_CHARS] or None
            if result.delivered:
                row.resolved_at = now
            audit.append(
                db,
                actor,
                "webhook.dead_letter_retried",
                "webhook_dead_letter",
                letter_id,
                {"event_id": event_id, "delivered": result.delivered, "status": result.status},
            )
            db.flush()
            return dead_letter_view(row)

    view = await asyncio.to_thread(save)
    return RetryOutcome(view, result.delivered, result.status, result.error)
