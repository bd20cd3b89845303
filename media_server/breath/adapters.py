"""The sobriety library's ports on the database: device registry, nonce ledger, photo index."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from media_server.db.enums import DeviceKind
from media_server.db.models import (
    Artifact,
    BreathNonce,
    Device,
    PhotoFingerprint,
)
from sobriety.config import SobrietySettings
from sobriety.photos import PhotoMatch, phash_from_hex, phash_hex, set_distance
from sobriety.reading import (
    RegisteredDevice,
)

log = logging.getLogger("kuzet.breath")


class DbDeviceRegistry:
    """`sobriety.reading.DeviceRegistry` on the devices table (breathalyzers with a public key only)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get_device(self, serial: str) -> RegisteredDevice | None:
        """The registered breathalyzer with this serial (device_id = Device.id), or None."""
        with self._sessions() as db:
            row = db.scalars(select(Device).where(Device.serial == serial)).one_or_none()
            if row is None or row.kind is not DeviceKind.BREATHALYZER or not row.public_key_b64:
                return None
            return RegisteredDevice(
                serial=row.serial,
                public_key_b64=row.public_key_b64,
                active=row.active,
                calibrated_on=row.calibrated_on,
                device_id=row.id,
            )


class RoutedDevice:
    """`sobriety.reading.DeviceRegistry` answering from the station row the route already read; any other
    serial goes to the database (so admission never trusts a snapshot for a serial it was not read for)."""

    def __init__(self, device: RegisteredDevice, fallback: DbDeviceRegistry) -> None:
        self._device = device
        self._fallback = fallback

    def get_device(self, serial: str) -> RegisteredDevice | None:
        """The routed station when `serial` is its serial, else the database's answer."""
        return self._device if serial == self._device.serial else self._fallback.get_device(serial)


class DbNonceLedger:
    """`sobriety.reading.NonceLedger` on breath_nonces; the (device, nonce) primary key makes it atomic."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def seen(self, device_id: str, nonce: str) -> bool:
        """True when this device already used this nonce."""
        with self._sessions() as db:
            return db.get(BreathNonce, (device_id, nonce)) is not None

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        """Insert the nonce in its own transaction; False when a concurrent or earlier insert won."""
        try:
            with self._sessions.begin() as db:
                db.add(BreathNonce(device_id=device_id, nonce=nonce, seen_at=at))
        except DbIntegrityError:
            return False
        return True


def prune_nonces(db: Session, now: datetime, settings: SobrietySettings) -> int:
    """Delete nonces older than any reading still admissible (`nonce_max_age_s + clock_skew_s`)."""
    cutoff = now - timedelta(seconds=settings.nonce_max_age_s + settings.clock_skew_s)
    result = db.execute(delete(BreathNonce).where(BreathNonce.seen_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


class DbPhotoIndex:
    """`sobriety.photos.PhotoIndex` on photo_fingerprints: every earlier breath photo of anyone.

    `find` scans every fingerprint (with its artifact's sha256) and compares pHash sets in Python, a few
    microseconds per row; `add` writes in the caller's transaction. Photo ids are artifact ids and test
    ids are session ids.
    """

    def __init__(self, db: Session, person_id: str) -> None:
        self._db = db
        self._person_id = person_id

    def find(self, hashes: tuple[int, ...], sha256: str, max_distance: int) -> list[PhotoMatch]:
        """Earlier photos within `max_distance` bits (`set_distance`) of `hashes`, or with the same sha256."""
        rows = self._db.execute(
            select(
                PhotoFingerprint.artifact_id,
                PhotoFingerprint.session_id,
                PhotoFingerprint.phash,
                Artifact.sha256,
                PhotoFingerprint.person_id,
                Artifact.created_at,
            ).join(Artifact, Artifact.id == PhotoFingerprint.artifact_id)
        )
        found = []
        for artifact_id, session_id, stored, digest, owner, created in rows:
            d = set_distance(phash_from_hex(stored), hashes)
            if d <= max_distance or digest == sha256:
                match = PhotoMatch(artifact_id, session_id, d, digest == sha256)
                found.append((match, owner == self._person_id, created))
        # Exact copies first (anyone's), then this person's own photos, most recent first: a station's
        # re-sent photo is almost always of its own person, and the pixel comparison stops at the first copy.
        found.sort(key=lambda f: (not f[0].exact, not f[1], -f[2].timestamp(), f[0].distance))
        return [match for match, _, _ in found]

    def add(self, photo_id: str, test_id: str, hashes: tuple[int, ...], sha256: str) -> None:
        """Record a photo (artifact `photo_id`) of test (session) `test_id`."""
        self._db.add(
            PhotoFingerprint(
                artifact_id=photo_id, session_id=test_id, person_id=self._person_id, phash=phash_hex(hashes)
            )
        )
