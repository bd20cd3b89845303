"""The station side of a breath test: build a reading, sign it, and form the multipart body.

Wire format of `POST /api/v1/breath-tests` (multipart/form-data):

* `reading`   - the canonical JSON bytes of the reading (`sobriety.reading.canonical_bytes`),
* `signature` - base64 of the 64-byte Ed25519 signature over exactly those bytes,
* `photo_0` .. `photo_n` - JPEG files, in the order of `photo_times`.

Used by `kuzet station simulate` (demos) and by tests. Keys are PKCS#8 PEM files (unencrypted, mode 0600);
the public key is registered as base64 of its raw 32 bytes.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sobriety.reading import canonical_bytes

READING_FIELD = "reading"
SIGNATURE_FIELD = "signature"
PHOTO_FIELD_PREFIX = "photo_"
NONCE_BYTES = 16  # 128 random bits, hex-encoded (32 characters)


def new_nonce() -> str:
    """A fresh random nonce (32 hex characters)."""
    return secrets.token_hex(NONCE_BYTES)


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 station key."""
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key: what an admin registers for the device."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def save_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the private key as unencrypted PKCS#8 PEM, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key; ValueError when it is another kind of key."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_reading(
    *,
    serial: str,
    person_id: str,
    brac: float,
    unit: str,
    calibrated_on: date,
    blow_start: datetime,
    blow_end: datetime,
    photo_times: Sequence[datetime],
    timestamp: datetime,
    nonce: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready reading dict (datetimes as ISO 8601 UTC with 'Z', date as YYYY-MM-DD)."""
    return {
        "device_serial": serial,
        "person_id": person_id,
        "brac": float(brac),
        "unit": unit,
        "calibrated_on": calibrated_on.isoformat(),
        "blow_start": _iso(blow_start),
        "blow_end": _iso(blow_end),
        "photo_times": [_iso(t) for t in photo_times],
        "nonce": nonce or new_nonce(),
        "timestamp": _iso(timestamp),
    }


def simulated_reading(
    *,
    serial: str,
    person_id: str,
    brac: float,
    unit: str,
    n_photos: int,
    calibrated_on: date | None = None,
    nonce: str | None = None,
    now: datetime | None = None,
    blow_s: float = 4.0,
) -> dict[str, Any]:
    """A plausible reading taken just now: a `blow_s` blow ending 1 s ago, photos spread over it."""
    now = now or datetime.now(UTC)
    end = now - timedelta(seconds=1)
    start = end - timedelta(seconds=blow_s)
    step = blow_s / (n_photos + 1)
    times = [start + timedelta(seconds=step * (i + 1)) for i in range(n_photos)]
    return build_reading(
        serial=serial,
        person_id=person_id,
        brac=brac,
        unit=unit,
        calibrated_on=calibrated_on or (now.date() - timedelta(days=30)),
        blow_start=start,
        blow_end=end,
        photo_times=times,
        timestamp=now,
        nonce=nonce,
    )


def sign_reading(reading: dict[str, Any], key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """(canonical reading bytes, base64 Ed25519 signature over them)."""
    body = canonical_bytes(reading)
    return body, base64.b64encode(key.sign(body)).decode("ascii")


def multipart_parts(
    reading_bytes: bytes, signature_b64: str, photos: Sequence[bytes]
) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    """(`data`, `files`) for httpx's multipart POST.

    `reading` is a plain form field holding the canonical JSON text; UTF-8 encode/decode is lossless, so
    the server verifies the signature over `reading.encode("utf-8")`, which equals `reading_bytes`.
    """
    data = {READING_FIELD: reading_bytes.decode("utf-8"), SIGNATURE_FIELD: signature_b64}
    files = [(f"{PHOTO_FIELD_PREFIX}{i}", (f"photo_{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
    return data, files
