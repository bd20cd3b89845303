"""The evidence store port: what the service needs from any place that keeps artifacts unaltered.

Keys are content addressed (`sha256/<first 2 hex>/<64 hex>`): the SHA-256 is computed while the bytes
are written and checked again on every read, so a key is also the proof of what it holds.
Stores are synchronous; the API calls them from a worker thread.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, BinaryIO, Protocol, runtime_checkable

KEY_PREFIX = "sha256"
SHA256_META = "sha256"  # user-metadata name of the content hash (x-amz-meta-sha256 on S3)
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_KEY_RE = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# S3 limits all user metadata of one object to 2 KiB (names plus values)
_META_TOTAL_BYTES = 2048


class EvidenceError(Exception):
    """Base of every evidence-store failure."""


class IntegrityError(EvidenceError):
    """Stored bytes do not hash to their content address (tampered or corrupted)."""


class ObjectLocked(EvidenceError):
    """The artifact is under retention or legal hold and cannot be deleted."""


class NotFound(EvidenceError):
    """No artifact is stored under this key."""


class StoreUnavailable(EvidenceError):
    """The backing store cannot be reached (and the artifact is not in the local spool)."""


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """What a store holds under one key.

    `spooled` is True while the artifact waits in the local spool for an unreachable S3 server;
    its key is already final. `retain_until` is the COMPLIANCE retention end (UTC).
    """

    key: str
    sha256: str
    size: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    version_id: str | None = None
    retain_until: datetime | None = None
    spooled: bool = False
    legal_hold: bool = False


@runtime_checkable
class EvidenceStore(Protocol):
    """Write-once, verify-on-read storage of evidence artifacts."""

    def put_bytes(
        self,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        """Store `data`; returns the existing artifact when the same content is already stored."""
        ...

    def put_file(
        self,
        path: Path,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        """Store a file by streaming it (multipart on S3 for large files); same dedupe as put_bytes."""
        ...

    def get_bytes(self, key: str, *, version_id: str | None = None) -> bytes:
        """The artifact's bytes, verified against its SHA-256 (IntegrityError on mismatch).

        `version_id` is the one `put_*` returned (kept on the artifact row): a versioned store reads
        exactly that version; without it, the first version written under the key.
        """
        ...

    def open_verified(self, key: str, *, version_id: str | None = None) -> IO[bytes]:
        """A readable file positioned at 0 whose whole content was verified before return.

        The caller closes it. Large artifacts are buffered in a temporary file, not in memory.
        `version_id` as for `get_bytes`.
        """
        ...

    def stat(self, key: str, *, version_id: str | None = None) -> StoredArtifact:
        """What is stored under `key` (NotFound when nothing is); `version_id` as for `get_bytes`."""
        ...

    def presign_get(self, key: str, expiry_s: int | None = None) -> str | None:
        """A time-limited GET URL, or None when the API must serve the bytes itself."""
        ...

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place or lift a legal hold (a held artifact cannot be deleted, whatever its retention)."""
        ...

    def delete(self, key: str) -> None:
        """Delete every stored version of `key`; ObjectLocked while retained or held."""
        ...

    def retention(self, key: str) -> datetime | None:
        """The COMPLIANCE retention end of `key` (UTC), None when it has none."""
        ...

    def healthy(self) -> bool:
        """Whether the backing store is reachable and writable right now."""
        ...

    def flush_spool(self) -> int:
        """Upload spooled artifacts to the backing store; returns how many were moved and verified."""
        ...


def key_for(sha256_hex: str) -> str:
    """The content address of a SHA-256 hex digest."""
    return f"{KEY_PREFIX}/{sha256_hex[:2]}/{sha256_hex}"


def digest_of(key: str) -> str:
    """The SHA-256 hex digest a key names; NotFound for anything that is not a content address."""
    match = _KEY_RE.match(key)
    if match is None or match.group(2)[:2] != match.group(1):
        raise NotFound(f"not an evidence key: {key!r}")
    return match.group(2)


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Validate user metadata: lower-case names, printable US-ASCII values, 2 KiB in all.

    S3 carries user metadata as HTTP headers, so the local store applies the same rules to keep
    both stores interchangeable.
    """
    out: dict[str, str] = {}
    total = 0
    for name, value in (metadata or {}).items():
        if not _META_KEY_RE.match(name) or name == SHA256_META:
            raise ValueError(f"invalid or reserved evidence metadata name: {name!r}")
        if not isinstance(value, str) or any(not (" " <= ch <= "~") for ch in value):
            raise ValueError(f"evidence metadata {name!r} must be printable US-ASCII text")
        total += len(name) + len(value)
        out[name] = value
    if total > _META_TOTAL_BYTES - 100:  # leave room for the sha256 entry
        raise ValueError("evidence metadata exceeds the 2 KiB S3 limit")
    return out


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 / RFC 1123 timestamp tolerantly into aware UTC.

    Ceph RGW sends RetainUntilDate with nanoseconds, which datetime (and minio-py) cannot parse:
    the fraction is cut to microseconds.
    """
    text = text.strip()
    match = _ISO_RE.match(text)
    if match is not None:
        date = "-".join(match.groups()[:3])
        clock = ":".join(match.groups()[3:6])
        micros = (match.group(7) or "0")[:6].ljust(6, "0")
        return datetime.fromisoformat(f"{date}T{clock}.{micros}{match.group(8) or 'Z'}").astimezone(UTC)
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unparseable timestamp: {text!r}") from exc


class HashingReader:
    """Wraps a stream; hashes what is read and refuses to return the last byte of a wrong content.

    Used while uploading: when `length` bytes have been read and their SHA-256 is not `expected`,
    `read` raises IntegrityError before handing out the final chunk, so the uploader aborts and no
    object with the wrong content is created under the content address.
    """

    def __init__(self, stream: BinaryIO, expected_sha256: str, length: int) -> None:
        self._stream = stream
        self._expected = expected_sha256
        self._length = length
        self._read = 0
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._read
        if remaining <= 0:
            return b""
        chunk = self._stream.read(remaining if size is None or size < 0 else min(size, remaining))
        self._hash.update(chunk)
        self._read += len(chunk)
        if self._read == self._length and self._hash.hexdigest() != self._expected:
            raise IntegrityError(
                f"content changed while being stored: sha256 {self._hash.hexdigest()} != {self._expected}"
            )
        return chunk
