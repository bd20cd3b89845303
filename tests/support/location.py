"""The tracker side of location monitoring for tests and benchmarks: sign position and event batches."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sobriety.simulator import new_nonce, public_key_b64, sign_reading

CENTRE = (43.2380, 76.9450)  # lat, lon: a point in Almaty


def iso(t: datetime) -> str:
    """ISO 8601 in UTC with offset, as a tracker sends it."""
    return t.astimezone(UTC).isoformat()


def offset(dx_m: float, dy_m: float, origin: tuple[float, float] = CENTRE) -> tuple[float, float]:
    """(lat, lon) of a point dx_m east and dy_m north of `origin` (small offsets)."""
    lat, lon = origin
    return lat + dy_m / 111_320.0, lon + dx_m / (111_320.0 * math.cos(math.radians(lat)))


def position(
    t: datetime, dx_m: float, dy_m: float = 0.0, acc: float = 10.0, source: str = "gnss"
) -> dict[str, Any]:
    """One fix `dx_m` east / `dy_m` north of CENTRE."""
    lat, lon = offset(dx_m, dy_m)
    return {"t": iso(t), "lat": lat, "lon": lon, "accuracy_m": acc, "source": source}


@dataclass
class FakeTracker:
    """A tracker with its own Ed25519 key; `envelope` signs a batch the way the device API expects."""

    serial: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key_b64(self) -> str:
        """What an admin registers."""
        return public_key_b64(self.key)

    def batch(
        self, items_key: str, items: Sequence[dict[str, Any]], sent_at: datetime, nonce: str | None = None
    ) -> dict[str, Any]:
        """The unsigned batch dict."""
        return {
            "device_serial": self.serial,
            "nonce": nonce or new_nonce(),
            "sent_at": iso(sent_at),
            items_key: list(items),
        }

    def envelope(self, batch: dict[str, Any], key: Ed25519PrivateKey | None = None) -> dict[str, str]:
        """{"batch": canonical JSON text, "signature": base64} signed with this tracker's key (or `key`)."""
        body, signature = sign_reading(batch, key or self.key)
        return {"batch": body.decode("utf-8"), "signature": signature}

    def positions(
        self, fixes: Sequence[dict[str, Any]], sent_at: datetime, nonce: str | None = None
    ) -> bytes:
        """The request body of POST /api/v1/positions."""
        return json.dumps(self.envelope(self.batch("positions", fixes, sent_at, nonce))).encode()

    def events(self, events: Sequence[dict[str, Any]], sent_at: datetime, nonce: str | None = None) -> bytes:
        """The request body of POST /api/v1/device-events."""
        return json.dumps(self.envelope(self.batch("events", events, sent_at, nonce))).encode()
