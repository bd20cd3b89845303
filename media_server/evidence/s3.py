"""S3 evidence store (MinIO, Ceph RGW, AWS) with Object Lock, and a local spool for outages.

The bucket is created with Object Lock (which turns versioning on) and a default COMPLIANCE
retention; every put also sets COMPLIANCE retention explicitly. When the server cannot be reached
(connection refused or timed out, 5xx) an artifact is written to the local spool under the same
content-addressed key and `flush_spool` uploads it later: nothing accepted is lost.

Reads name a version, never just the key: the version id `put_*` returned (the caller keeps it on the
artifact row) or, without one, the first version written under the key. A later PUT under the same key
(Object Lock allows new versions) or a delete marker therefore cannot change or hide what an artifact
answers. Deleting by key alone would add such a marker: the bucket also gets a policy denying it
(`deny_delete_policy`, where the server supports bucket policies).

Server differences handled here: deleting a locked version is 403 AccessDenied on Ceph and
400 InvalidRequest on MinIO; Ceph sends RetainUntilDate with nanoseconds (read from the HEAD header
with a tolerant parser, not with minio-py's get_object_retention).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.objectlockconfig import DAYS, ObjectLockConfig
from minio.retention import Retention

from media_server.evidence.local import CHUNK_BYTES, VERIFIED_COPY_MEMORY_BYTES, Spool, hash_file
from media_server.evidence.port import (
    DEFAULT_CONTENT_TYPE,
    SHA256_META,
    EvidenceError,
    HashingReader,
    IntegrityError,
    NotFound,
    ObjectLocked,
    StoredArtifact,
    StoreUnavailable,
    check_metadata,
    digest_of,
    key_for,
    parse_timestamp,
    utcnow,
)
from media_server.settings import EvidenceSettings, S3Settings, Settings

log = logging.getLogger(__name__)

_META_PREFIX = "x-amz-meta-"
_RETAIN_HEADER = "x-amz-object-lock-retain-until-date"
_HOLD_HEADER = "x-amz-object-lock-legal-hold"
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound", "ResourceNotFound"})
# Ceph answers a delete of a locked version with AccessDenied, MinIO with InvalidRequest
_LOCKED_CODES = frozenset({"AccessDenied", "InvalidRequest"})
_UNAVAILABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


def unreachable(exc: BaseException) -> bool:
    """Whether an exception from the S3 client means "server unreachable or failing" (spool it)."""
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ServerError):
        return bool(exc.status_code >= 500)
    if isinstance(exc, InvalidResponseError):  # e.g. a proxy's HTML 502 page
        return int(getattr(exc, "_code", 0) or 0) >= 500
    if isinstance(exc, S3Error):
        return bool(exc.code in _UNAVAILABLE_CODES) or int(getattr(exc.response, "status", 0) or 0) >= 500
    return False


def make_client(s3: S3Settings) -> Minio:
    """A minio client with short timeouts and one quick retry, so an outage cannot hang a request."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=s3.timeout_s, read=s3.timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=s3.ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0, backoff_factor=0.2),
    )
    return Minio(
        s3.endpoint,
        access_key=s3.access_key.get_secret_value() or None,
        secret_key=s3.secret_key.get_secret_value() or None,
        secure=s3.secure,
        region=s3.region,
        http_client=http,
    )


class S3EvidenceStore:
    """Evidence in an S3 bucket under Object Lock, spooled locally while the server is down."""

    def __init__(
        self,
        client: Minio,
        *,
        bucket: str,
        evidence: EvidenceSettings,
        spool_dir: Path,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._retention_days = evidence.retention_days
        self._part_bytes = evidence.multipart_part_bytes
        self._presign_s = evidence.presign_expiry_s
        self._retry_s = evidence.spool_retry_s
        self._down_until = 0.0  # time.monotonic() before which puts skip S3 and go to the spool
        self._clock = clock
        self.spool = Spool(spool_dir, retention_days=evidence.retention_days, clock=clock)
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3EvidenceStore:
        """The store described by `settings.s3`, `settings.evidence` and `settings.spool_dir`."""
        return cls(
            make_client(settings.s3),
            bucket=settings.s3.bucket,
            evidence=settings.evidence,
            spool_dir=settings.spool_dir,
        )

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _remote(self, what: str) -> Iterator[None]:
        """Translate "server unreachable" failures into StoreUnavailable."""
        try:
            yield
        except EvidenceError:
            raise
        except Exception as exc:
            if unreachable(exc):
                raise StoreUnavailable(f"S3 {what} failed: {exc}") from exc
            raise

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock, self._remote("bucket setup"):
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self._bucket):
                try:
                    self._client.make_bucket(self._bucket, object_lock=True)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":
                        raise
                self._client.set_object_lock_config(
                    self._bucket, ObjectLockConfig(COMPLIANCE, self._retention_days, DAYS)
                )
                log.info("created evidence bucket %s with object lock", self._bucket)
                self._deny_delete_markers()
            else:
                try:
                    self._client.get_object_lock_config(self._bucket)
                except S3Error as exc:
                    if exc.code != "ObjectLockConfigurationNotFoundError":
                        raise
                    raise EvidenceError(
                        f"bucket {self._bucket} exists without Object Lock; evidence needs a locked bucket"
                    ) from exc
                self._deny_delete_markers(only_if_no_policy=True)
            self._bucket_ready = True

    def _deny_delete_markers(self, *, only_if_no_policy: bool = False) -> None:
        """Bucket policy: nobody, the service's own credentials included, may DELETE without a version
        id. On a versioned bucket that call only adds a delete marker, which makes a locked artifact
        answer 404 by key. Deleting a version by id (retention erasure) stays with Object Lock to
        judge. Best effort: a store without bucket policies keeps working (reads name their version,
        so a marker hides nothing from the service)."""
        try:
            if only_if_no_policy:
                try:
                    if self._client.get_bucket_policy(self._bucket):
                        return  # the operator's own policy wins
                except S3Error as exc:
                    if exc.code != "NoSuchBucketPolicy":
                        raise
            self._client.set_bucket_policy(self._bucket, json.dumps(deny_delete_policy(self._bucket)))
            log.info("bucket %s: DeleteObject without a version id denied by policy", self._bucket)
        except S3Error as exc:
            log.warning("bucket %s: could not set the no-delete-marker policy (%s)", self._bucket, exc.code)

    def _first_version(self, key: str) -> str | None:
        """The first version written under `key` that holds bytes, None when none does.

        A content address is first written by the service (an upload whose bytes do not hash to the key
        is aborted before its last byte), so anything later (a new version, a delete marker) came from
        elsewhere and must not change what the key answers.
        """
        with self._remote("list versions"):
            listed = [
                obj
                for obj in self._client.list_objects(self._bucket, prefix=key, include_version=True)
                if obj.object_name == key
            ]
        # S3 lists the versions of one key newest first
        real = [str(obj.version_id) for obj in listed if not obj.is_delete_marker and obj.version_id]
        if not real:
            return None
        if len(listed) > 1:
            log.warning(
                "evidence %s has %d later versions or delete markers; reading the first", key, len(listed) - 1
            )
        return real[-1]

    def _head(self, key: str, version_id: str | None = None) -> StoredArtifact | None:
        """The version `version_id` of `key` (default: the first one written), None when it is not there."""
        version = version_id or self._first_version(key)
        if version is None:
            return None
        with self._remote("HEAD"):
            try:
                obj = self._client.stat_object(self._bucket, key, version_id=version)
            except S3Error as exc:
                if exc.code not in _MISSING_CODES:
                    raise
                return None
        return _artifact_from_headers(key, obj)

    def _upload(
        self,
        key: str,
        sha256: str,
        src: BinaryIO,
        size: int,
        content_type: str,
        metadata: Mapping[str, str],
        *,
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> StoredArtifact:
        """PUT (multipart above part size) with explicit COMPLIANCE retention.

        The HashingReader re-hashes what is sent and fails the upload before its last byte when the
        content does not match the key, so a content address never holds other bytes.
        """
        now = self._clock()
        until = retain_until or now + timedelta(days=self._retention_days)
        until = until.replace(microsecond=until.microsecond // 1000 * 1000)  # S3 keeps milliseconds
        # a spooled artifact whose retention already ran out gets the bucket's default retention
        retention = Retention(COMPLIANCE, until) if until > now else None
        with self._remote("upload"):
            result = self._client.put_object(
                self._bucket,
                key,
                HashingReader(src, sha256, size),
                size,
                content_type=content_type,
                metadata={**metadata, SHA256_META: sha256},
                part_size=self._part_bytes,
                retention=retention,
                legal_hold=legal_hold,
            )
        return StoredArtifact(
            key=key,
            sha256=sha256,
            size=size,
            content_type=content_type,
            metadata=dict(metadata),
            version_id=result.version_id,
            retain_until=until if retention else None,
            legal_hold=legal_hold,
        )

    def _put(
        self,
        open_src: Callable[[], BinaryIO],
        sha256: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredArtifact:
        key = key_for(sha256)
        if time.monotonic() >= self._down_until:
            try:
                self._ensure_bucket()
                existing = self._head(key)
                if existing is not None:
                    return existing
                with open_src() as src:
                    return self._upload(key, sha256, src, size, content_type, metadata)
            except StoreUnavailable as exc:
                # a hanging server costs each request timeout_s: spool directly for a while instead
                self._down_until = time.monotonic() + self._retry_s
                log.warning("S3 unreachable, spooling locally for the next %.0f s: %s", self._retry_s, exc)
        with open_src() as src:
            return self.spool.write_verified(
                src, expected_sha256=sha256, content_type=content_type, metadata=metadata
            )

    def _fetch(self, key: str, sink: Callable[[bytes], Any], version_id: str | None = None) -> None:
        """Stream version `version_id` of `key` (default: the first one written) into `sink`, verifying
        its SHA-256 at the end."""
        expected = digest_of(key)
        version = version_id or self._first_version(key)
        if version is None:
            raise NotFound(key)
        with self._remote("GET"):
            try:
                response = self._client.get_object(self._bucket, key, version_id=version)
            except S3Error as exc:
                if exc.code not in _MISSING_CODES:
                    raise
                raise NotFound(f"{key} version {version}") from None
            try:
                claimed = response.headers.get(_META_PREFIX + SHA256_META)
                digest = hashlib.sha256()
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    sink(chunk)
            finally:
                response.close()
                response.release_conn()
        if digest.hexdigest() != expected or (claimed is not None and claimed != expected):
            raise IntegrityError(f"{key}: S3 object hashes to {digest.hexdigest()} (metadata says {claimed})")

    # -- the EvidenceStore port ----------------------------------------------------------------

    def put_bytes(
        self,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        """Store `data` (dedupe by content); spooled locally while S3 is unreachable."""
        meta = check_metadata(metadata)
        return self._put(
            lambda: io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data), content_type, meta
        )

    def put_file(
        self,
        path: Path,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredArtifact:
        """Stream a file to S3 (multipart above `multipart_part_bytes`); spooled while S3 is down.

        S3 needs the key and x-amz-meta-sha256 before the first byte is sent, so the file is hashed
        once up front; the upload hashes the bytes it sends again and aborts on any difference.
        """
        meta = check_metadata(metadata)
        sha256, size = hash_file(path)
        return self._put(lambda: path.open("rb"), sha256, size, content_type, meta)

    def get_bytes(self, key: str, *, version_id: str | None = None) -> bytes:
        """Verified bytes of `key`, from the spool while it waits there, else from S3 (version
        `version_id`, default the first one written)."""
        if self.spool.has(key):
            try:
                return self.spool.get_bytes(key)
            except NotFound:
                pass  # flushed meanwhile: now in S3
        parts: list[bytes] = []
        self._fetch(key, parts.append, version_id)
        return b"".join(parts)

    def open_verified(self, key: str, *, version_id: str | None = None) -> IO[bytes]:
        """A verified copy of `key` (memory up to 8 MiB, then a temporary file); the caller closes it.
        `version_id` as for `get_bytes`."""
        if self.spool.has(key):
            try:
                return self.spool.open_verified(key)
            except NotFound:
                pass
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=VERIFIED_COPY_MEMORY_BYTES)
        try:
            self._fetch(key, out.write, version_id)
            out.seek(0)
            return out
        except BaseException:
            out.close()
            raise

    def stat(self, key: str, *, version_id: str | None = None) -> StoredArtifact:
        """What is stored under `key` (the spooled copy while it waits in the spool); `version_id` as
        for `get_bytes`."""
        digest_of(key)
        if self.spool.has(key):
            try:
                return self.spool.stat(key)
            except NotFound:
                pass
        artifact = self._head(key, version_id)
        if artifact is None:
            raise NotFound(key)
        return artifact

    def presign_get(self, key: str, expiry_s: int | None = None) -> str | None:
        """A presigned GET URL (default lifetime `presign_expiry_s`); None while the key is spooled."""
        digest_of(key)
        if self.spool.has(key):
            return None
        version = self._first_version(key)
        if version is None:
            raise NotFound(key)
        return str(
            self._client.presigned_get_object(
                self._bucket, key, expires=timedelta(seconds=expiry_s or self._presign_s), version_id=version
            )
        )

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place or lift the S3 legal hold (recorded in the spool, and applied on flush, while spooled)."""
        if self.spool.has(key):
            self.spool.set_legal_hold(key, on)
            return
        artifact = self._head(key)
        if artifact is None:
            raise NotFound(key)
        with self._remote("legal hold"):
            if on:
                self._client.enable_object_legal_hold(self._bucket, key, version_id=artifact.version_id)
            else:
                self._client.disable_object_legal_hold(self._bucket, key, version_id=artifact.version_id)

    def delete(self, key: str) -> None:
        """Delete every version of `key` by version id; ObjectLocked while any is retained or held.

        Deleting by version id matters: a plain DELETE on a versioned bucket only adds a delete
        marker, which would hide locked evidence instead of being refused.
        """
        digest_of(key)
        if self.spool.has(key):
            self.spool.delete(key)  # refused while retained, like the S3 copy will be
        with self._remote("list versions"):
            versions = [
                obj.version_id
                for obj in self._client.list_objects(self._bucket, prefix=key, include_version=True)
                if obj.object_name == key
            ]
        if not versions:
            raise NotFound(key)
        for version_id in versions:
            with self._remote("delete"):
                try:
                    self._client.remove_object(self._bucket, key, version_id=version_id)
                except S3Error as exc:
                    if exc.code in _LOCKED_CODES:
                        raise ObjectLocked(f"{key} version {version_id} is locked ({exc.code})") from exc
                    raise

    def retention(self, key: str) -> datetime | None:
        """RetainUntilDate of the current version (read from the HEAD header, nanoseconds tolerated)."""
        return self.stat(key).retain_until

    def healthy(self) -> bool:
        """Whether the S3 server answers and the locked bucket exists."""
        try:
            self._ensure_bucket()
            with self._remote("health"):
                ok = bool(self._client.bucket_exists(self._bucket))
        except (EvidenceError, MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.info("evidence store unhealthy: %s", exc)
            return False
        if ok:
            self._down_until = 0.0
        return ok

    def flush_spool(self) -> int:
        """Upload spooled artifacts; each leaves the spool only after a verified read-back from S3.

        Idempotent: an artifact already in S3 (uploaded before a crash) is verified and released.
        Stops quietly at the first sign that S3 is still unreachable; returns how many moved.
        """
        moved = 0
        with self._flush_lock:
            for key in list(self.spool.keys()):
                try:
                    self._flush_one(key)
                except NotFound:
                    continue  # released by a concurrent flush
                except StoreUnavailable as exc:
                    self._down_until = time.monotonic() + self._retry_s
                    log.warning("S3 still unreachable, spool kept: %s", exc)
                    break
                except IntegrityError as exc:
                    log.error("spooled artifact %s failed verification, kept in spool: %s", key, exc)
                    continue
                moved += 1
                self._down_until = 0.0  # S3 is back: puts stop spooling
        return moved

    def _flush_one(self, key: str) -> None:
        spooled = self.spool.stat(key)
        self._ensure_bucket()
        remote = self._head(key)
        if remote is None:
            with self.spool.blob_path(key).open("rb") as src:
                self._upload(
                    key,
                    spooled.sha256,
                    src,
                    spooled.size,
                    spooled.content_type,
                    spooled.metadata,
                    retain_until=spooled.retain_until,
                    legal_hold=spooled.legal_hold,
                )
        elif spooled.legal_hold and not remote.legal_hold:
            with self._remote("legal hold"):
                self._client.enable_object_legal_hold(self._bucket, key, version_id=remote.version_id)
        self._fetch(key, lambda _chunk: None)  # read back: the S3 copy must hash to its key
        self.spool.release(key)
        log.info("flushed spooled artifact %s to S3", key)


def deny_delete_policy(bucket: str) -> dict[str, Any]:
    """The bucket policy that refuses DELETE without a version id (delete markers) to everyone."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KuzetNoDeleteMarkers",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def _artifact_from_headers(key: str, obj: Any) -> StoredArtifact:
    headers = {str(name).lower(): str(value) for name, value in (obj.metadata or {}).items()}
    user = {
        name[len(_META_PREFIX) :]: value for name, value in headers.items() if name.startswith(_META_PREFIX)
    }
    sha256 = user.pop(SHA256_META, "")
    if sha256 != digest_of(key):
        raise IntegrityError(f"{key}: object metadata names sha256 {sha256!r}")
    retain = headers.get(_RETAIN_HEADER)
    return StoredArtifact(
        key=key,
        sha256=sha256,
        size=int(obj.size),
        content_type=str(obj.content_type or DEFAULT_CONTENT_TYPE),
        metadata=user,
        version_id=obj.version_id,
        retain_until=parse_timestamp(retain) if retain else None,
        legal_hold=headers.get(_HOLD_HEADER, "").upper() == "ON",
    )
