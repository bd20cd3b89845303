"""Local-directory evidence store (the embedded default) and the S3 spool built on the same layout.

Layout under `root`: `sha256/<2 hex>/<64 hex>` holds the bytes (read-only), `<same>.json` the
sidecar (sha256, size, content type, user metadata, retain_until, legal_hold). A write goes to
`.tmp/`, is hashed while written, fsync'd, then renamed into place; the sidecar is written last and
marks the artifact as committed. Files are 0444 and every folder 0700 (private to the service account).
A process running as that account can still unlink a file (POSIX ties deletion to the folder's owner):
reads detect a missing or altered artifact by its hash. Retention and legal hold are enforced by this code only: the real
write-once guarantee in production is S3 Object Lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

from media_server.evidence.port import (
    DEFAULT_CONTENT_TYPE,
    IntegrityError,
    NotFound,
    ObjectLocked,
    StoredArtifact,
    check_metadata,
    digest_of,
    key_for,
    parse_timestamp,
    utcnow,
)

CHUNK_BYTES = 1024 * 1024
# open_verified keeps artifacts up to this size in memory, larger ones in a temporary file
VERIFIED_COPY_MEMORY_BYTES = 8 * 1024 * 1024
_READ_ONLY = 0o444
# Evidence folders are private to the service account (files inside are read-only, 0444).
_PRIVATE_DIR = 0o700


def private_dirs(root: Path, path: Path) -> None:
    """Create `path` (under `root`) and any missing folder between them, each mode 0700; an existing
    folder of the store with looser bits is tightened."""
    if path.is_dir() and (path.stat().st_mode & 0o777) == _PRIVATE_DIR:
        return
    path.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    current = path
    while True:
        if (current.stat().st_mode & 0o777) != _PRIVATE_DIR:
            os.chmod(current, _PRIVATE_DIR)
        if current == root or root not in current.parents:
            break
        current = current.parent


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size in bytes of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def copy_verified(src: BinaryIO, expected_sha256: str, expected_size: int | None) -> IO[bytes]:
    """Copy a stream into a temporary file while hashing it; IntegrityError unless it matches."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=VERIFIED_COPY_MEMORY_BYTES)
    try:
        digest = hashlib.sha256()
        size = 0
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        if digest.hexdigest() != expected_sha256 or (expected_size is not None and size != expected_size):
            raise IntegrityError(
                f"sha256/{expected_sha256}: stored bytes hash to {digest.hexdigest()} ({size} bytes)"
            )
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise


class _DirectoryStore:
    """Content-addressed files with JSON sidecars; shared by the local store and the S3 spool."""

    _spooled = False  # what `StoredArtifact.spooled` says for artifacts kept here

    def __init__(
        self,
        root: Path,
        *,
        retention_days: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.root = root
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._lock = threading.Lock()  # serialises commits and sidecar rewrites within a process

    # -- writing ------------------------------------------------------------------------------

    def put_bytes(
        self,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        return self._write(io.BytesIO(data), content_type, check_metadata(metadata), None)

    def put_file(
        self,
        path: Path,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        with path.open("rb") as src:
            return self._write(src, content_type, check_metadata(metadata), None)

    def _write(
        self,
        src: BinaryIO,
        content_type: str,
        metadata: dict[str, str],
        expected_sha256: str | None,
    ) -> StoredArtifact:
        """Hash while writing to .tmp, fsync, rename into place, then commit the sidecar."""
        tmp_dir = self.root / ".tmp"
        private_dirs(self.root, tmp_dir)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            if expected_sha256 is not None and sha != expected_sha256:
                raise IntegrityError(f"content changed while being stored: sha256 {sha} != {expected_sha256}")
            key = key_for(sha)
            blob, sidecar = self._paths(key)
            with self._lock:
                if sidecar.exists():
                    return self.stat(key)  # same content already committed: the first write stands
                os.chmod(tmp, _READ_ONLY)
                private_dirs(self.root, blob.parent)
                os.replace(tmp, blob)
                _fsync_dir(blob.parent)
                artifact = StoredArtifact(
                    key=key,
                    sha256=sha,
                    size=size,
                    content_type=content_type,
                    metadata=metadata,
                    retain_until=self._clock() + self._retention,
                    spooled=self._spooled,
                )
                self._write_sidecar(artifact)
                return artifact
        finally:
            tmp.unlink(missing_ok=True)

    def _write_sidecar(self, artifact: StoredArtifact) -> None:
        _, sidecar = self._paths(artifact.key)
        record: dict[str, Any] = {
            "key": artifact.key,
            "sha256": artifact.sha256,
            "size": artifact.size,
            "content_type": artifact.content_type,
            "metadata": dict(artifact.metadata),
            "retain_until": artifact.retain_until.isoformat() if artifact.retain_until else None,
            "legal_hold": artifact.legal_hold,
            "written_at": self._clock().isoformat(),
        }
        private_dirs(self.root, self.root / ".tmp")
        fd, tmp_name = tempfile.mkstemp(dir=self.root / ".tmp", prefix="meta-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, _READ_ONLY)
            os.replace(tmp_name, sidecar)
            _fsync_dir(sidecar.parent)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------

    def _paths(self, key: str) -> tuple[Path, Path]:
        digest_of(key)  # rejects anything that is not a content address (no path tricks)
        blob = self.root / key
        return blob, blob.with_name(blob.name + ".json")

    def has(self, key: str) -> bool:
        """Whether `key` is committed here (sidecar present)."""
        return self._paths(key)[1].exists()

    # A local key holds one version only: `version_id` (an S3 notion) is accepted and ignored.

    def stat(self, key: str, *, version_id: str | None = None) -> StoredArtifact:
        _, sidecar = self._paths(key)
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(key) from None
        except ValueError as exc:  # not JSON, or not UTF-8
            raise IntegrityError(f"{key}: unreadable sidecar: {exc}") from exc
        if not isinstance(record, dict) or record.get("sha256") != digest_of(key):
            raise IntegrityError(f"{key}: the sidecar does not name this sha256")
        retain = record.get("retain_until")
        return StoredArtifact(
            key=key,
            sha256=record["sha256"],
            size=int(record["size"]),
            content_type=record["content_type"],
            metadata=dict(record.get("metadata") or {}),
            retain_until=parse_timestamp(retain) if retain else None,
            legal_hold=bool(record.get("legal_hold")),
            spooled=self._spooled,
        )

    def get_bytes(self, key: str, *, version_id: str | None = None) -> bytes:
        artifact = self.stat(key)
        blob, _ = self._paths(key)
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{key}: committed artifact has no content file") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != artifact.sha256 or len(data) != artifact.size:
            raise IntegrityError(f"{key}: stored bytes hash to {actual} ({len(data)} bytes)")
        return data

    def open_verified(self, key: str, *, version_id: str | None = None) -> IO[bytes]:
        artifact = self.stat(key)
        blob, _ = self._paths(key)
        try:
            with blob.open("rb") as src:
                return copy_verified(src, artifact.sha256, artifact.size)
        except FileNotFoundError:
            raise IntegrityError(f"{key}: committed artifact has no content file") from None

    def keys(self) -> Iterator[str]:
        """Every committed key, in no particular order."""
        for sidecar in (self.root / "sha256").glob("*/*.json"):
            key = f"sha256/{sidecar.parent.name}/{sidecar.name.removesuffix('.json')}"
            try:
                digest_of(key)
            except NotFound:
                continue
            yield key

    # -- lock state ---------------------------------------------------------------------------

    def retention(self, key: str) -> datetime | None:
        return self.stat(key).retain_until

    def set_legal_hold(self, key: str, on: bool) -> None:
        with self._lock:
            artifact = self.stat(key)
            if artifact.legal_hold != on:
                self._write_sidecar(replace(artifact, legal_hold=on))

    def delete(self, key: str) -> None:
        with self._lock:
            artifact = self.stat(key)
            if artifact.legal_hold:
                raise ObjectLocked(f"{key} is under legal hold")
            if artifact.retain_until is not None and artifact.retain_until > self._clock():
                raise ObjectLocked(f"{key} is retained until {artifact.retain_until.isoformat()}")
            self._remove(key)

    def _remove(self, key: str) -> None:
        blob, sidecar = self._paths(key)
        sidecar.unlink(missing_ok=True)  # uncommit first: a half-removed artifact reads as absent
        blob.unlink(missing_ok=True)
        _fsync_dir(blob.parent)

    def healthy(self) -> bool:
        try:
            private_dirs(self.root, self.root / ".tmp")
        except OSError:
            return False
        return os.access(self.root / ".tmp", os.W_OK)


class LocalEvidenceStore(_DirectoryStore):
    """The embedded default: evidence in a local directory (`settings.evidence_dir`)."""

    def presign_get(self, key: str, expiry_s: int | None = None) -> str | None:
        """Always None: the API serves local artifacts itself (after `open_verified`)."""
        self._paths(key)
        return None

    def flush_spool(self) -> int:
        """Nothing is ever spooled: the local directory is the store."""
        return 0


class Spool(_DirectoryStore):
    """Artifacts accepted while the S3 server was unreachable; same layout, flagged `spooled`."""

    _spooled = True

    def write_verified(
        self,
        src: BinaryIO,
        *,
        expected_sha256: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredArtifact:
        """Spool a stream whose SHA-256 is already known (IntegrityError if the bytes differ)."""
        return self._write(src, content_type, metadata, expected_sha256)

    def blob_path(self, key: str) -> Path:
        """Path of the spooled bytes of `key` (read them through `open_verified` to check them)."""
        return self._paths(key)[0]

    def release(self, key: str) -> None:
        """Forget a spooled artifact, whatever its retention: only once it is verified in S3."""
        with self._lock:
            self._remove(key)
