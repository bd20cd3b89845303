"""Outgoing webhooks: verdict and violation events POSTed as signed JSON to the case system.

Each delivery carries `X-Kuzet-Signature: sha256=<hex HMAC-SHA256 of the raw body under the shared
secret>`, `X-Kuzet-Event` (the event type) and `X-Kuzet-Delivery` (the event id, stable across
retries so a receiver can drop duplicates). The body holds ids, decisions and reasons, never
biometric data. Deliveries run on the event loop with httpx's async client (no thread blocks) and
retry connection errors, timeouts, 429 and 5xx with doubling back-off; other 4xx are final.
A delivery that fails for good is handed, with its exact body, to a `DeadLetterSink`
(`media_server.dead_letters.DbDeadLetters` stores it for admins to see and retry).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx

from media_server.settings import WebhookSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kuzet-Signature"
EVENT_HEADER = "X-Kuzet-Event"
DELIVERY_HEADER = "X-Kuzet-Delivery"
SIGNATURE_SCHEME = "sha256"
_RETRY_STATUS_MIN = 500
_TOO_MANY_REQUESTS = 429


class EventType(StrEnum):
    """What a webhook event announces. Stored/sent values are stable."""

    VERDICT = "verdict"  # a session received its automatic verdict (PASS / FAIL / REVIEW)
    VIOLATION = "violation"  # a FAIL: a missed window, a failed reading, a reviewer's FAIL
    REVIEW = "review"  # a reviewer decided a session
    CHECKIN_DUE = "checkin_due"  # a window opened: carries the one-time link for the SMS/push gateway
    ALERT = "alert"  # a location or device alert: a zone violation, tamper (violation) or a technical alert


@dataclass(frozen=True)
class WebhookEvent:
    """One event: `data` is plain JSON without personal or biometric data."""

    type: EventType
    data: Mapping[str, Any]
    id: str = ""
    created_at: datetime | None = None

    def body(self) -> bytes:
        """The exact bytes POSTed (and signed)."""
        created = self.created_at or datetime.now(UTC)
        payload = {
            "id": self.id or str(uuid.uuid4()),
            "type": self.type.value,
            "created_at": created.astimezone(UTC).isoformat(),
            "data": dict(self.data),
        }
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DeliveryResult:
    """How delivery to one URL ended: delivered or not, attempts made, last status or error."""

    url: str
    delivered: bool
    attempts: int
    status: int | None
    error: str | None = None


class DeadLetterSink(Protocol):
    """Keeps a delivery that failed for good (blocking; the notifier calls it in a thread)."""

    def record(self, event_id: str, event_type: str, body: bytes, result: DeliveryResult) -> None: ...


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for `body`: 'sha256=<hex>'."""
    return f"{SIGNATURE_SCHEME}={hmac.new(secret, body, hashlib.sha256).hexdigest()}"


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of `body` under `secret` (constant-time compare)."""
    if not header:
        return False
    return hmac.compare_digest(header.strip(), sign(secret, body))


def verdict_event(
    *,
    session_id: str,
    person_id: str,
    kind: str,
    decision: str,
    reasons: Sequence[str],
    verdict_id: str,
    retake_offered: bool = False,
) -> WebhookEvent:
    """A `verdict` event; use `violation_event` too when the decision is FAIL."""
    return WebhookEvent(
        EventType.VERDICT,
        {
            "session_id": session_id,
            "person_id": person_id,
            "kind": kind,
            "decision": decision,
            "reasons": list(reasons),
            "verdict_id": verdict_id,
            "retake_offered": retake_offered,
        },
        id=f"verdict-{verdict_id}",
    )


def violation_event(
    *, session_id: str, person_id: str, kind: str, reason: str, verdict_id: str, source: str
) -> WebhookEvent:
    """A `violation` event; `source` says what booked it ("missed", "verdict", "review")."""
    return WebhookEvent(
        EventType.VIOLATION,
        {
            "session_id": session_id,
            "person_id": person_id,
            "kind": kind,
            "reason": reason,
            "verdict_id": verdict_id,
            "source": source,
        },
        id=f"violation-{verdict_id}",
    )


def alert_event(
    *,
    alert_id: str,
    person_id: str,
    kind: str,
    source: str,
    code: str,
    started_at: datetime,
    ended_at: datetime,
    zone_id: str | None = None,
    position_ids: Sequence[int] = (),
    device_event_id: str | None = None,
) -> WebhookEvent:
    """An `alert` event: `kind` violation / technical, `source` zone / device, `code` what happened."""
    return WebhookEvent(
        EventType.ALERT,
        {
            "alert_id": alert_id,
            "person_id": person_id,
            "kind": kind,
            "source": source,
            "code": code,
            "started_at": started_at.astimezone(UTC).isoformat(),
            "ended_at": ended_at.astimezone(UTC).isoformat(),
            "zone_id": zone_id,
            "position_ids": list(position_ids),
            "device_event_id": device_event_id,
        },
        id=f"alert-{alert_id}",
    )


class WebhookNotifier:
    """Delivers events to every configured URL, concurrently, with retries; never raises on delivery.

    Build one in the app lifespan and `aclose()` it at shutdown (pending deliveries are awaited).
    """

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        client: httpx.AsyncClient | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        self._settings = settings
        self._dead_letters = dead_letters
        self._secret = settings.secret.get_secret_value().encode()
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False)
        self._owns_client = client is None
        self._pending: set[asyncio.Task[list[DeliveryResult]]] = set()

    @property
    def enabled(self) -> bool:
        """Whether any URL is configured."""
        return bool(self._settings.urls)

    def _backoff_s(self, attempt: int) -> float:
        return float(min(self._settings.backoff_max_s, self._settings.backoff_initial_s * 2 ** (attempt - 1)))

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryResult:
        status: int | None = None
        error: str | None = None
        attempts = self._settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                response = await self._client.post(url, content=body, headers=headers)
                status, error = response.status_code, None
                if 200 <= status < 300:
                    return DeliveryResult(url, True, attempt, status)
                if status < _RETRY_STATUS_MIN and status != _TOO_MANY_REQUESTS:
                    return DeliveryResult(url, False, attempt, status, f"refused with HTTP {status}")
                error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                await asyncio.sleep(self._backoff_s(attempt))
        return DeliveryResult(url, False, attempts, status, error)

    def _headers(self, body: bytes, event_type: str, event_id: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            EVENT_HEADER: event_type,
            DELIVERY_HEADER: event_id,
        }

    async def _dead_letter(self, event_id: str, event_type: str, body: bytes, result: DeliveryResult) -> None:
        log.warning(
            "webhook delivery failed for good",
            extra={
                "url": result.url,
                "event_type": event_type,
                "event_id": event_id,
                "attempts": result.attempts,
                "error": result.error,
            },
        )
        if self._dead_letters is None:
            return
        try:
            await asyncio.to_thread(self._dead_letters.record, event_id, event_type, body, result)
        except Exception:
            log.exception("could not store the dead letter", extra={"event_id": event_id})

    async def send(self, event: WebhookEvent) -> list[DeliveryResult]:
        """Deliver `event` to every URL and wait for the outcome (retries included).

        A URL that failed for good is handed to the dead-letter sink with the exact body.
        """
        if not self._settings.urls:
            return []
        body = event.body()
        event_id = str(json.loads(body)["id"])
        headers = self._headers(body, event.type.value, event_id)
        results = list(
            await asyncio.gather(*(self._deliver(url, body, headers) for url in self._settings.urls))
        )
        for result in results:
            if not result.delivered:
                await self._dead_letter(event_id, event.type.value, body, result)
        return results

    async def redeliver(self, url: str, body: bytes, event_type: str, event_id: str) -> DeliveryResult:
        """Deliver a stored body once more to `url` (a dead letter's retry; signed with today's secret)."""
        return await self._deliver(url, body, self._headers(body, event_type, event_id))

    def submit(self, event: WebhookEvent) -> asyncio.Task[list[DeliveryResult]] | None:
        """Deliver in the background (call from the event loop); the task is kept until it ends."""
        if not self._settings.urls:
            return None
        task = asyncio.create_task(self.send(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def aclose(self) -> None:
        """Wait for background deliveries, then close the HTTP client if this notifier made it."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()
