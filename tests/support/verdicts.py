"""Checks on a written verdict that several suites share: its manifest is stored, signed and verifies."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from media_server.db.models import Artifact, Verdict
from media_server.services import Services


def signed_manifest(services: Services, verdict_id: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The verdict's manifest, after checking it is stored with the verdict's sha256 and that its
    signature verifies against `public_key` (InvalidSignature otherwise)."""
    with services.sessions() as db:
        verdict = db.get(Verdict, verdict_id)
        assert verdict is not None, verdict_id
        row = db.scalars(
            select(Artifact).where(
                Artifact.session_id == verdict.session_id, Artifact.sha256 == verdict.manifest_sha256
            )
        ).one()
        key, meta, sha = row.key, dict(row.meta), verdict.manifest_sha256
    body = services.store.get_bytes(key)
    assert hashlib.sha256(body).hexdigest() == sha
    public_key.verify(base64.b64decode(meta["ed25519_signature_b64"]), body)
    manifest: dict[str, Any] = json.loads(body)
    return manifest
