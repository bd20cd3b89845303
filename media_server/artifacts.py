"""Evidence first: every artifact is hashed, stored and its row committed before anything is judged."""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from media_server.db import audit
from media_server.db.enums import ArtifactKind
from media_server.db.models import ARTIFACT_VERSION_META, Artifact
from media_server.evidence.port import StoredArtifact
from media_server.services import Services


def _meta_with_version(meta: Mapping[str, Any], stored: StoredArtifact) -> dict[str, Any]:
    """The row's meta plus the store version written, so reads name that version (`Artifact.version_id`)."""
    return {**meta, ARTIFACT_VERSION_META: stored.version_id} if stored.version_id else dict(meta)


@dataclass(frozen=True)
class StoredRef:
    """An artifact row written for this session (`version_id`: the store version it names)."""

    artifact_id: str
    key: str
    sha256: str
    size: int
    kind: ArtifactKind
    version_id: str | None = None

    @classmethod
    def of(cls, row: Artifact) -> StoredRef:
        """The reference an artifact row makes."""
        return cls(row.id, row.key, row.sha256, row.size, row.kind, row.version_id)


def store_artifact(
    services: Services,
    session_id: str,
    kind: ArtifactKind,
    content_type: str,
    meta: dict[str, Any],
    *,
    data: bytes | None = None,
    path: Path | None = None,
) -> StoredRef:
    """Store bytes or a file in the evidence store and commit its artifact row (blocking; call in a thread)."""
    metadata = {"session-id": session_id, "kind": kind.value}
    if path is not None:
        stored = services.store.put_file(path, content_type=content_type, metadata=metadata)
    else:
        stored = services.store.put_bytes(data or b"", content_type=content_type, metadata=metadata)
    if stored.spooled:
        services.metrics.spooled.inc()
    with services.sessions.begin() as db:
        row = Artifact(
            session_id=session_id,
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            content_type=content_type,
            kind=kind,
            spooled=stored.spooled,
            meta=_meta_with_version(meta, stored),
        )
        db.add(row)
        db.flush()
        audit.append(
            db,
            actor="system",
            action="evidence_stored",
            subject_type="session",
            subject_id=session_id,
            details={"artifact_id": row.id, "kind": kind.value, "sha256": stored.sha256, "size": stored.size},
        )
        return StoredRef.of(row)


@dataclass(frozen=True)
class NewArtifact:
    """Bytes to store as one artifact of a session."""

    kind: ArtifactKind
    content_type: str
    meta: dict[str, Any]
    data: bytes


def store_artifacts(services: Services, session_id: str, items: Sequence[NewArtifact]) -> list[StoredRef]:
    """Store several blobs, then commit all their artifact rows and audit entries in ONE transaction
    (blocking; call in a thread). Same guarantee as `store_artifact` for each (bytes stored, then the row
    committed, before anything is judged), with one commit and one audit-chain lock per submission."""
    stored = []
    for item in items:
        metadata = {"session-id": session_id, "kind": item.kind.value}
        put = services.store.put_bytes(item.data, content_type=item.content_type, metadata=metadata)
        if put.spooled:
            services.metrics.spooled.inc()
        stored.append(put)
    refs: list[StoredRef] = []
    with services.sessions.begin() as db:
        for item, put in zip(items, stored, strict=True):
            row = Artifact(
                session_id=session_id,
                key=put.key,
                sha256=put.sha256,
                size=put.size,
                content_type=item.content_type,
                kind=item.kind,
                spooled=put.spooled,
                meta=_meta_with_version(item.meta, put),
            )
            db.add(row)
            db.flush()
            audit.append(
                db,
                actor="system",
                action="evidence_stored",
                subject_type="session",
                subject_id=session_id,
                details={
                    "artifact_id": row.id,
                    "kind": item.kind.value,
                    "sha256": put.sha256,
                    "size": put.size,
                },
            )
            refs.append(StoredRef.of(row))
    return refs


def jpeg_bytes(rgb: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """JPEG encoding of an RGB frame (evidence copy of a sampled frame)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def wav_bytes(pcm16k: npt.NDArray[np.float32]) -> bytes:
    """16 kHz mono 16-bit WAV of float32 samples in [-1, 1]."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm16k, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
