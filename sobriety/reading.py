"""Signed breath readings from home stations: canonical form, Ed25519 signature, freshness and validity.

The station sends the reading as canonical JSON bytes (`canonical_bytes`) and a base64 Ed25519 signature
over exactly those bytes. The service stores both as evidence first, then calls:

1. `admit_submission` - canonical form, known device, signature, schema, freshness, nonce replay.
2. `validate_reading` - calibration, blow timing, photo capture times, plausibility and unit conversion.

Both return `CheckResult`s; anything not PASS means the submission is rejected (the API maps the codes to
HTTP errors). FAIL marks integrity violations (bad signature, replay); TECHNICAL marks a station or clock
problem that asks for a retake and is never booked as a violation.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from identity.checks import CheckKind, CheckResult, Outcome
from sobriety.config import SobrietySettings
from sobriety.units import AlcoholUnit, convert

Serial = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
PersonId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Nonce = Annotated[str, StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class BreathReading(BaseModel):
    """One signed breath reading as a station sends it (JSON; datetimes ISO 8601 with offset).

    `brac` is in `unit` (a breath unit). `photo_times` are the capture times of the photos in upload order
    (`photo_0` ... `photo_n`). `timestamp` is when the station signed the reading.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    device_serial: Serial
    person_id: PersonId
    brac: float = Field(ge=0.0, le=10.0)
    unit: AlcoholUnit
    calibrated_on: date
    blow_start: AwareDatetime
    blow_end: AwareDatetime
    photo_times: list[AwareDatetime] = Field(min_length=1, max_length=32)
    nonce: Nonce
    timestamp: AwareDatetime

    @field_validator("unit")
    @classmethod
    def _breath_unit(cls, v: AlcoholUnit) -> AlcoholUnit:
        if not v.is_breath:
            raise ValueError("a station reports breath alcohol: unit must be g/210L or mg/L")
        return v

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready dict whose `canonical_bytes` a station signs."""
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """A station registered by an admin: serial, base64 raw 32-byte Ed25519 public key, status.

    `device_id` is the service's id for the device (the nonce ledger's key); it defaults to the serial.
    """

    serial: str
    public_key_b64: str
    active: bool = True
    calibrated_on: date | None = None
    device_id: str | None = None

    @property
    def ledger_id(self) -> str:
        """The key nonces are remembered under."""
        return self.device_id or self.serial


class DeviceRegistry(Protocol):
    """Looks up registered stations (the service implements it on its devices table)."""

    def get_device(self, serial: str) -> RegisteredDevice | None:
        """The registered device with this serial, or None."""
        ...


class NonceLedger(Protocol):
    """Remembers the nonces each device has used.

    Entries older than `nonce_max_age_s + clock_skew_s` may be pruned: such readings are rejected as stale
    before the ledger is asked. `remember` must be atomic (a unique index on (device, nonce)) and return
    False when the nonce was already there, so two concurrent submissions cannot both pass.
    """

    def seen(self, device_id: str, nonce: str) -> bool:
        """True when this device already used this nonce."""
        ...

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        """Record the nonce; False when it was already recorded (a replay)."""
        ...


@dataclass
class InMemoryNonceLedger:
    """NonceLedger for tests and the simulator demo."""

    entries: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def seen(self, device_id: str, nonce: str) -> bool:
        """True when this device already used this nonce."""
        return (device_id, nonce) in self.entries

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        """Record the nonce; False when it was already recorded."""
        if (device_id, nonce) in self.entries:
            return False
        self.entries[(device_id, nonce)] = at
        return True


@dataclass
class InMemoryDeviceRegistry:
    """DeviceRegistry for tests."""

    devices: dict[str, RegisteredDevice] = field(default_factory=dict)

    def add(self, device: RegisteredDevice) -> None:
        """Register (or replace) a device."""
        self.devices[device.serial] = device

    def get_device(self, serial: str) -> RegisteredDevice | None:
        """The registered device with this serial, or None."""
        return self.devices.get(serial)


def canonical_bytes(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON: keys sorted, no whitespace, UTF-8, no NaN/Infinity. What a station signs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_canonical(reading_bytes: bytes) -> dict[str, Any] | None:
    """The JSON object in `reading_bytes` when they are exactly its canonical form, else None."""
    # RecursionError: a deeply nested document (`[` x 5000) is malformed input, not a server fault.
    try:
        obj = json.loads(reading_bytes.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    try:
        again = canonical_bytes(obj)
    except (ValueError, RecursionError):
        return None
    return obj if again == reading_bytes else None


def decode_public_key(public_key_b64: str) -> Ed25519PublicKey | None:
    """An Ed25519 public key from base64 of its raw 32 bytes, or None when malformed."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(reading_bytes: bytes, signature_b64: str, public_key_b64: str) -> bool:
    """True when `signature_b64` (base64, 64 bytes) is a valid Ed25519 signature of `reading_bytes`."""
    key = decode_public_key(public_key_b64)
    if key is None:
        return False
    try:
        sig = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(sig) != 64:
        return False
    try:
        key.verify(sig, reading_bytes)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Admission:
    """Result of `admit_submission`: the parsed reading when accepted, and every check made."""

    reading: BreathReading | None
    checks: list[CheckResult]

    @property
    def accepted(self) -> bool:
        """True when every admission check passed."""
        return self.reading is not None and all(c.passed for c in self.checks)

    @property
    def rejection(self) -> CheckResult | None:
        """The first check that did not pass, if any."""
        return next((c for c in self.checks if not c.passed), None)


def _sig(outcome: Outcome, code: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(CheckKind.BREATH_SIGNATURE, outcome, code, message, details=dict(details))


def admit_submission(
    reading_bytes: bytes,
    signature_b64: str,
    devices: DeviceRegistry,
    ledger: NonceLedger,
    now: datetime,
    settings: SobrietySettings,
) -> Admission:
    """Decide whether a signed submission is admissible; remembers its nonce when it is.

    Checks in order, stopping at the first failure: canonical JSON, registered active device, Ed25519
    signature, reading schema, timestamp freshness (`nonce_max_age_s`, `clock_skew_s`), nonce replay.
    `now` must be timezone-aware.
    """
    obj = parse_canonical(reading_bytes)
    if obj is None:
        return Admission(
            None,
            [
                _sig(
                    Outcome.FAIL,
                    "not_canonical",
                    "Reading is not canonical JSON (sorted keys, no spaces, UTF-8).",
                )
            ],
        )
    serial = obj.get("device_serial")
    device = devices.get_device(serial) if isinstance(serial, str) else None
    if device is None:
        return Admission(
            None,
            [_sig(Outcome.FAIL, "unknown_device", f"Device {serial!r} is not registered.", serial=serial)],
        )
    if not device.active:
        return Admission(
            None, [_sig(Outcome.FAIL, "device_revoked", f"Device {serial!r} is deactivated.", serial=serial)]
        )
    if not verify_signature(reading_bytes, signature_b64, device.public_key_b64):
        return Admission(
            None,
            [
                _sig(
                    Outcome.FAIL,
                    "bad_signature",
                    "Signature does not verify with the device's key.",
                    serial=serial,
                )
            ],
        )
    checks = [
        _sig(Outcome.PASS, "signature_valid", "Signature verifies with the registered key.", serial=serial)
    ]
    try:
        reading = BreathReading.model_validate_json(reading_bytes)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        checks.append(_sig(Outcome.FAIL, "invalid_reading", "Reading fields are invalid.", errors=errors))
        return Admission(None, checks)

    skew = timedelta(seconds=settings.clock_skew_s)
    age_s = (now - reading.timestamp).total_seconds()
    if reading.timestamp > now + skew:
        checks.append(
            _sig(
                Outcome.TECHNICAL,
                "future_timestamp",
                "Reading is timestamped in the future; check the station clock.",
                age_s=age_s,
            )
        )
        return Admission(None, checks)
    if now - reading.timestamp > timedelta(seconds=settings.nonce_max_age_s) + skew:
        checks.append(
            _sig(
                Outcome.TECHNICAL,
                "stale_reading",
                f"Reading is {age_s:.0f} s old (limit {settings.nonce_max_age_s} s); take a new test.",
                age_s=age_s,
            )
        )
        return Admission(None, checks)
    if len(reading.nonce) < settings.nonce_min_chars:
        checks.append(
            _sig(Outcome.FAIL, "weak_nonce", f"Nonce shorter than {settings.nonce_min_chars} chars.")
        )
        return Admission(None, checks)
    if ledger.seen(device.ledger_id, reading.nonce) or not ledger.remember(
        device.ledger_id, reading.nonce, now
    ):
        checks.append(
            _sig(
                Outcome.FAIL,
                "replayed_nonce",
                "This reading's nonce was used before (replay).",
                nonce=reading.nonce,
            )
        )
        return Admission(None, checks)
    checks.append(_sig(Outcome.PASS, "fresh", "Reading is fresh and its nonce is new.", age_s=age_s))
    return Admission(reading, checks)


def _reading(outcome: Outcome, code: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(CheckKind.BREATH_READING, outcome, code, message, details=dict(details))


def validate_reading(
    reading: BreathReading,
    now: datetime,
    settings: SobrietySettings,
    photo_count: int,
    registry_calibrated_on: date | None = None,
) -> list[CheckResult]:
    """Check calibration, blow timing, photo capture times and plausibility; one CheckResult per aspect.

    `photo_count` is how many photo files were uploaded. `registry_calibrated_on` is the calibration date
    an admin recorded for the device (the older of it and the station's own date is used). The last
    result, when all pass, carries the reading converted to every unit in `details`.
    """
    out: list[CheckResult] = []
    ratio = settings.partition_ratio

    calibrated_on = reading.calibrated_on
    if registry_calibrated_on is not None and registry_calibrated_on < calibrated_on:
        calibrated_on = registry_calibrated_on
    test_day = reading.timestamp.date()
    expires_on = calibrated_on + timedelta(days=settings.calibration_validity_days)
    if calibrated_on > now.date() + timedelta(days=1):
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "calibration_in_future",
                "Calibration date is in the future.",
                calibrated_on=calibrated_on.isoformat(),
            )
        )
    elif test_day > expires_on:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "calibration_expired",
                f"Sensor calibration expired on {expires_on.isoformat()}; the device needs service.",
                calibrated_on=calibrated_on.isoformat(),
                expires_on=expires_on.isoformat(),
            )
        )
    else:
        out.append(
            _reading(
                Outcome.PASS,
                "calibration_valid",
                "Sensor calibration is current.",
                calibrated_on=calibrated_on.isoformat(),
                expires_on=expires_on.isoformat(),
                registry_calibrated_on=registry_calibrated_on.isoformat() if registry_calibrated_on else None,
            )
        )

    blow_s = (reading.blow_end - reading.blow_start).total_seconds()
    skew = timedelta(seconds=settings.clock_skew_s)
    if blow_s < settings.blow_min_s:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "blow_too_short",
                f"Blow lasted {blow_s:.1f} s (minimum {settings.blow_min_s} s).",
                blow_s=blow_s,
            )
        )
    elif blow_s > settings.blow_max_s:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "blow_too_long",
                f"Blow lasted {blow_s:.1f} s (maximum {settings.blow_max_s} s).",
                blow_s=blow_s,
            )
        )
    elif reading.blow_end > reading.timestamp + skew:
        out.append(
            _reading(Outcome.TECHNICAL, "blow_after_signing", "Blow ends after the reading was signed.")
        )
    else:
        out.append(_reading(Outcome.PASS, "blow_valid", "Blow timing is valid.", blow_s=blow_s))

    n_times = len(reading.photo_times)
    tol = timedelta(seconds=settings.photo_window_tolerance_s)
    lo, hi = reading.blow_start - tol, reading.blow_end + tol
    outside = [i for i, t in enumerate(reading.photo_times) if not lo <= t <= hi]
    if n_times != photo_count:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "photo_count_mismatch",
                f"Reading lists {n_times} photo times but {photo_count} photos were uploaded.",
            )
        )
    elif photo_count < settings.photo_min_count:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "too_few_photos",
                f"{photo_count} photos; at least {settings.photo_min_count} are required.",
            )
        )
    elif photo_count > settings.photo_max_count:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "too_many_photos",
                f"{photo_count} photos; at most {settings.photo_max_count} are accepted.",
            )
        )
    elif outside:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "photo_outside_blow",
                f"Photo(s) {outside} were taken outside the blow window; the photos must show the blow.",
                outside=outside,
                blow_start=reading.blow_start.isoformat(),
                blow_end=reading.blow_end.isoformat(),
                tolerance_s=settings.photo_window_tolerance_s,
            )
        )
    else:
        out.append(_reading(Outcome.PASS, "photos_in_blow", "Every photo was taken during the blow."))

    g_210l = convert(reading.brac, reading.unit, AlcoholUnit.G_210L, ratio)
    if g_210l > settings.max_brac_g_210l:
        out.append(
            _reading(
                Outcome.TECHNICAL,
                "reading_implausible",
                f"Reading {reading.brac} {reading.unit.value} is beyond the plausible range; "
                "sensor fault suspected.",
                brac_g_210l=g_210l,
            )
        )
    else:
        out.append(
            _reading(
                Outcome.PASS,
                "reading_valid",
                "Reading is within the plausible range.",
                brac=reading.brac,
                unit=reading.unit.value,
                partition_ratio=ratio,
                converted={u.value: convert(reading.brac, reading.unit, u, ratio) for u in AlcoholUnit},
            )
        )
    return out
