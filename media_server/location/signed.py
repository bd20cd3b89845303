"""Signed position and event batches from trackers: wire format and admission (pure, with ports).

Wire format of `POST /api/v1/positions` and `POST /api/v1/device-events` (application/json):

    {"batch": "<canonical JSON text of the batch>", "signature": "<base64 Ed25519 signature>"}

The signature covers exactly the UTF-8 bytes of `batch`, which must be canonical JSON
(`sobriety.reading.canonical_bytes`: sorted keys, no whitespace) - the breath-reading scheme, reused:
the device registry holds each tracker's raw Ed25519 public key, every batch carries a fresh `nonce`
and the time it was signed (`sent_at`), judged against `sobriety.nonce_max_age_s` and
`sobriety.clock_skew_s` (one nonce ledger serves breathalyzers and trackers, so one freshness rule).
The fixes or events inside may be much older than `sent_at`: a gateway that was offline sends them
late, and they are accepted (up to `location.max_position_age_days`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, Protocol, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from media_server.db.enums import DeviceEventType, PositionSource
from sobriety.reading import Nonce, NonceLedger, Serial, parse_canonical, verify_signature

SIGNATURE_MAX_CHARS = 256
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PositionIn(_Strict):
    """One fix: time, WGS 84 degrees, accuracy radius in metres, and where it came from."""

    t: AwareDatetime
    lat: Latitude
    lon: Longitude
    accuracy_m: float = Field(gt=0.0, le=100_000.0)
    source: PositionSource = PositionSource.GNSS


class PositionBatch(_Strict):
    """What a tracker signs: its serial, a fresh nonce, when it signed, and the fixes (any order)."""

    device_serial: Serial
    nonce: Nonce
    sent_at: AwareDatetime
    positions: list[PositionIn] = Field(min_length=1, max_length=10_000)


class EventIn(_Strict):
    """One device event: its type, when it happened, and free JSON details (no personal data)."""

    type: DeviceEventType
    t: AwareDatetime
    details: dict[str, Any] = Field(default_factory=dict, max_length=32)


class EventBatch(_Strict):
    """What a gateway signs for device events."""

    device_serial: Serial
    nonce: Nonce
    sent_at: AwareDatetime
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class SignedEnvelope(_Strict):
    """The request body."""

    batch: str = Field(min_length=2)
    signature: str = Field(min_length=1, max_length=SIGNATURE_MAX_CHARS)


@dataclass(frozen=True, slots=True)
class Tracker:
    """A registered tracker: its id (nonce ledger key), serial, public key, state and assigned person."""

    device_id: str
    serial: str
    public_key_b64: str
    active: bool
    person_id: str | None


class TrackerRegistry(Protocol):
    """Looks up registered trackers by serial (the service implements it on its devices table)."""

    def get_tracker(self, serial: str) -> Tracker | None:
        """The tracker with this serial, or None."""
        ...


B = TypeVar("B", PositionBatch, EventBatch)

# Rejection code -> HTTP status.
STATUS_FOR_CODE: dict[str, int] = {
    "not_canonical": 400,
    "invalid_batch": 400,
    "weak_nonce": 400,
    "unknown_device": 401,
    "device_revoked": 401,
    "bad_signature": 401,
    "replayed_nonce": 409,
    "stale_batch": 422,
    "future_timestamp": 422,
    "device_unassigned": 422,
    "person_not_active": 410,
    "too_many_items": 400,
    "future_fix": 422,
    "fix_too_old": 422,
}


@dataclass(frozen=True, slots=True)
class Admitted(Generic[B]):
    """An admitted batch and the tracker that signed it (its `person_id` is set)."""

    batch: B
    tracker: Tracker


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a batch was refused: a stable code (see STATUS_FOR_CODE) and a message saying what to do."""

    code: str
    message: str
    details: tuple[str, ...] = ()

    @property
    def status(self) -> int:
        """The HTTP status of this refusal."""
        return STATUS_FOR_CODE.get(self.code, 422)


def admit(
    model: type[B],
    body: bytes,
    signature_b64: str,
    trackers: TrackerRegistry,
    ledger: NonceLedger,
    now: datetime,
    *,
    max_age_s: float,
    clock_skew_s: float,
    nonce_min_chars: int,
    check: Callable[[B], Refused | None] = lambda _: None,
) -> Admitted[B] | Refused:
    """Canonical form, known active tracker, signature, schema, freshness, `check`, nonce (remembered when new).

    Order matters: nothing from an unsigned body is trusted (the schema is read only after the signature
    verifies), and the nonce is remembered last so a refused batch does not burn it. `check` adds the
    caller's limits on the batch's content (counts, fix ages).
    """
    obj = parse_canonical(body)
    if obj is None:
        return Refused("not_canonical", "the batch is not canonical JSON (sorted keys, no spaces, UTF-8)")
    serial = obj.get("device_serial")
    tracker = trackers.get_tracker(serial) if isinstance(serial, str) else None
    if tracker is None:
        return Refused("unknown_device", f"tracker {serial!r} is not registered")
    if not tracker.active:
        return Refused("device_revoked", f"tracker {serial!r} is deactivated")
    if not verify_signature(body, signature_b64, tracker.public_key_b64):
        return Refused("bad_signature", "the signature does not verify with the tracker's registered key")
    try:
        batch = model.model_validate(obj)
    except ValidationError as exc:
        errors = tuple(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return Refused("invalid_batch", "the batch's fields are invalid", errors)
    skew = timedelta(seconds=clock_skew_s)
    if batch.sent_at > now + skew:
        return Refused("future_timestamp", "the batch is signed in the future; check the tracker's clock")
    if now - batch.sent_at > timedelta(seconds=max_age_s) + skew:
        return Refused("stale_batch", f"the batch was signed more than {max_age_s:.0f} s ago; sign it again")
    if len(batch.nonce) < nonce_min_chars:
        return Refused("weak_nonce", f"the nonce is shorter than {nonce_min_chars} characters")
    if tracker.person_id is None:
        return Refused("device_unassigned", f"tracker {serial!r} is not assigned to a person")
    problem = check(batch)
    if problem is not None:
        return problem
    if ledger.seen(tracker.device_id, batch.nonce) or not ledger.remember(
        tracker.device_id, batch.nonce, now
    ):
        return Refused("replayed_nonce", "this batch's nonce was used before (replay)")
    return Admitted(batch, tracker)
