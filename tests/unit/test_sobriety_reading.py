"""Signed breath readings: signature, device, freshness, replay, calibration, blow and photo timing."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from identity.checks import Outcome
from sobriety.config import SobrietySettings
from sobriety.reading import (
    BreathReading,
    InMemoryDeviceRegistry,
    InMemoryNonceLedger,
    RegisteredDevice,
    admit_submission,
    canonical_bytes,
    parse_canonical,
    validate_reading,
    verify_signature,
)
from sobriety.simulator import build_reading, public_key_b64, sign_reading, simulated_reading

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SETTINGS = SobrietySettings()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def devices(key: Ed25519PrivateKey) -> InMemoryDeviceRegistry:
    reg = InMemoryDeviceRegistry()
    reg.add(RegisteredDevice("BR-001", public_key_b64(key), device_id="dev-1"))
    return reg


def reading(**over: object) -> dict[str, object]:
    r = simulated_reading(serial="BR-001", person_id="p-1", brac=0.0, unit="g/210L", n_photos=3, now=NOW)
    r.update(over)
    return r


def admit(
    body: bytes,
    sig: str,
    devices: InMemoryDeviceRegistry,
    ledger: InMemoryNonceLedger | None = None,
    now: datetime = NOW,
):
    return admit_submission(
        body, sig, devices, ledger if ledger is not None else InMemoryNonceLedger(), now, SETTINGS
    )


def test_canonical_bytes_sorted_compact_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": "ü", "c": [1.5, None]}) == '{"a":"ü","b":1,"c":[1.5,null]}'.encode()
    assert parse_canonical(b'{"a": 1}') is None  # whitespace
    assert parse_canonical(b'{"b":1,"a":2}') is None  # unsorted
    assert parse_canonical(b'{"a":1,"a":1}') is None  # duplicate key
    assert parse_canonical(b'{"a":1}') == {"a": 1}


def test_valid_signature_is_admitted(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    body, sig = sign_reading(reading(), key)
    assert verify_signature(body, sig, public_key_b64(key))
    adm = admit(body, sig, devices)
    assert adm.accepted, adm.checks
    assert isinstance(adm.reading, BreathReading)
    assert adm.reading.device_serial == "BR-001"
    assert [c.code for c in adm.checks] == ["signature_valid", "fresh"]


def test_one_flipped_byte_is_rejected(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    body, sig = sign_reading(reading(brac=0.0), key)
    tampered = body.replace(b'"brac":0.0', b'"brac":0.1')
    assert tampered != body
    assert not verify_signature(tampered, sig, public_key_b64(key))
    adm = admit(tampered, sig, devices)
    assert not adm.accepted and adm.rejection is not None
    assert adm.rejection.code == "bad_signature" and adm.rejection.outcome is Outcome.FAIL
    raw = bytearray(base64.b64decode(sig))
    raw[0] ^= 0x01
    assert admit(body, base64.b64encode(bytes(raw)).decode(), devices).rejection.code == "bad_signature"


def test_signature_by_another_key_is_rejected(devices: InMemoryDeviceRegistry) -> None:
    body, sig = sign_reading(reading(), Ed25519PrivateKey.generate())
    assert admit(body, sig, devices).rejection.code == "bad_signature"
    assert not verify_signature(body, "not base64!", "also not")


def test_unknown_and_revoked_device(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    body, sig = sign_reading(reading(device_serial="BR-999"), key)
    assert admit(body, sig, devices).rejection.code == "unknown_device"
    devices.add(RegisteredDevice("BR-001", public_key_b64(key), active=False))
    body, sig = sign_reading(reading(), key)
    assert admit(body, sig, devices).rejection.code == "device_revoked"


def test_non_canonical_and_extra_fields(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    r = reading()
    body = canonical_bytes(r)[:-1] + b" }"
    assert admit(body, base64.b64encode(key.sign(body)).decode(), devices).rejection.code == "not_canonical"
    body, sig = sign_reading(reading(firmware="1.2"), key)
    rej = admit(body, sig, devices).rejection
    assert rej.code == "invalid_reading" and any("firmware" in e for e in rej.details["errors"])
    body, sig = sign_reading(reading(brac="0.0"), key)  # strict: a string is not a number
    assert admit(body, sig, devices).rejection.code == "invalid_reading"
    body, sig = sign_reading(reading(unit="permille"), key)  # a station reports breath units only
    assert admit(body, sig, devices).rejection.code == "invalid_reading"


def test_stale_and_future_timestamps(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    body, sig = sign_reading(reading(), key)
    late = NOW + timedelta(seconds=SETTINGS.nonce_max_age_s + SETTINGS.clock_skew_s + 1)
    adm = admit(body, sig, devices, now=late)
    assert adm.rejection.code == "stale_reading" and adm.rejection.outcome is Outcome.TECHNICAL
    assert admit(body, sig, devices, now=NOW + timedelta(seconds=SETTINGS.nonce_max_age_s)).accepted
    early = NOW - timedelta(seconds=SETTINGS.clock_skew_s + 5)
    assert admit(body, sig, devices, now=early).rejection.code == "future_timestamp"


def test_replayed_nonce_is_rejected(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    ledger = InMemoryNonceLedger()
    body, sig = sign_reading(reading(nonce="a" * 32), key)
    assert admit(body, sig, devices, ledger).accepted
    assert ("dev-1", "a" * 32) in ledger.entries
    again = admit(body, sig, devices, ledger)
    assert again.rejection.code == "replayed_nonce" and again.rejection.outcome is Outcome.FAIL
    # A new reading re-signed with the same nonce is a replay too.
    body2, sig2 = sign_reading(reading(nonce="a" * 32, brac=0.01), key)
    assert admit(body2, sig2, devices, ledger).rejection.code == "replayed_nonce"
    body3, sig3 = sign_reading(reading(nonce="abc12345678"), key)
    assert admit(body3, sig3, devices, ledger).rejection.code == "weak_nonce"


def _valid(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry, **over: object) -> BreathReading:
    body, sig = sign_reading(reading(**over), key)
    adm = admit(body, sig, devices)
    assert adm.reading is not None, adm.checks
    return adm.reading


def codes(checks) -> dict[str, Outcome]:
    return {c.code: c.outcome for c in checks}


def test_valid_reading_passes_every_check(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    checks = validate_reading(_valid(key, devices, brac=0.04), NOW, SETTINGS, photo_count=3)
    assert all(c.passed for c in checks), checks
    conv = checks[-1].details["converted"]
    assert conv["g/210L"] == pytest.approx(0.04)
    assert conv["mg/L"] == pytest.approx(0.04 * 1000 / 210)
    assert conv["g/100mL"] == pytest.approx(0.04)  # 2100:1 by construction


def test_expired_calibration(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    old = (NOW.date() - timedelta(days=SETTINGS.calibration_validity_days + 1)).isoformat()
    r = _valid(key, devices, calibrated_on=old)
    assert codes(validate_reading(r, NOW, SETTINGS, 3))["calibration_expired"] is Outcome.TECHNICAL
    # The registry's older date wins over the station's claim.
    fresh = _valid(key, devices)
    got = codes(validate_reading(fresh, NOW, SETTINGS, 3, registry_calibrated_on=date(2020, 1, 1)))
    assert "calibration_expired" in got
    future = _valid(key, devices, calibrated_on=(NOW.date() + timedelta(days=5)).isoformat())
    assert "calibration_in_future" in codes(validate_reading(future, NOW, SETTINGS, 3))


def test_photo_outside_blow_window(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    start = NOW - timedelta(seconds=10)
    end = start + timedelta(seconds=4)
    times = [start + timedelta(seconds=1), start + timedelta(seconds=2), end + timedelta(seconds=3)]
    r = build_reading(
        serial="BR-001",
        person_id="p-1",
        brac=0.0,
        unit="g/210L",
        calibrated_on=date(2026, 10, 1),
        blow_start=start,
        blow_end=end,
        photo_times=times,
        timestamp=NOW,
    )
    body, sig = sign_reading(r, key)
    got = validate_reading(admit(body, sig, devices).reading, NOW, SETTINGS, 3)
    bad = [c for c in got if c.code == "photo_outside_blow"]
    assert bad and bad[0].details["outside"] == [2] and bad[0].outcome is Outcome.TECHNICAL
    # Within the tolerance it counts as during the blow.
    times[2] = end + timedelta(seconds=SETTINGS.photo_window_tolerance_s / 2)
    r = build_reading(
        serial="BR-001",
        person_id="p-1",
        brac=0.0,
        unit="g/210L",
        calibrated_on=date(2026, 10, 1),
        blow_start=start,
        blow_end=end,
        photo_times=times,
        timestamp=NOW,
    )
    body, sig = sign_reading(r, key)
    assert "photos_in_blow" in codes(validate_reading(admit(body, sig, devices).reading, NOW, SETTINGS, 3))


def test_blow_and_photo_count_problems(key: Ed25519PrivateKey, devices: InMemoryDeviceRegistry) -> None:
    r = _valid(key, devices)
    assert "photo_count_mismatch" in codes(validate_reading(r, NOW, SETTINGS, photo_count=2))
    short = simulated_reading(
        serial="BR-001", person_id="p-1", brac=0.0, unit="g/210L", n_photos=3, now=NOW, blow_s=0.5
    )
    body, sig = sign_reading(short, key)
    assert "blow_too_short" in codes(validate_reading(admit(body, sig, devices).reading, NOW, SETTINGS, 3))
    few = simulated_reading(serial="BR-001", person_id="p-1", brac=0.0, unit="g/210L", n_photos=1, now=NOW)
    body, sig = sign_reading(few, key)
    assert "too_few_photos" in codes(validate_reading(admit(body, sig, devices).reading, NOW, SETTINGS, 1))
    wild = _valid(key, devices, brac=2.0)
    assert codes(validate_reading(wild, NOW, SETTINGS, 3))["reading_implausible"] is Outcome.TECHNICAL
