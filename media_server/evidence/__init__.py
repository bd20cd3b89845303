"""Evidence storage: content-addressed, hash-verified, write-once artifacts.

`build_store(settings)` is the composition point: S3 (with Object Lock and a local spool) when
`settings.s3.endpoint` is set, else the local evidence directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media_server.evidence.local import LocalEvidenceStore
from media_server.evidence.port import (
    EvidenceError,
    EvidenceStore,
    IntegrityError,
    NotFound,
    ObjectLocked,
    StoredArtifact,
    StoreUnavailable,
    digest_of,
    key_for,
)

if TYPE_CHECKING:
    from media_server.settings import Settings

__all__ = [
    "EvidenceError",
    "EvidenceStore",
    "IntegrityError",
    "LocalEvidenceStore",
    "NotFound",
    "ObjectLocked",
    "StoreUnavailable",
    "StoredArtifact",
    "build_store",
    "digest_of",
    "key_for",
]


def build_store(settings: Settings) -> EvidenceStore:
    """The configured evidence store: S3 when `settings.s3.endpoint` is set, else the local directory."""
    if settings.s3.endpoint:
        # imported here so the embedded default never loads minio
        from media_server.evidence.s3 import S3EvidenceStore

        return S3EvidenceStore.from_settings(settings)
    return LocalEvidenceStore(settings.evidence_dir, retention_days=settings.evidence.retention_days)
