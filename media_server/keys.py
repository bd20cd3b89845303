"""Service secrets: taken from settings, or generated once into data_dir with 0600 permissions."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from media_server.settings import Settings


@dataclass(frozen=True)
class ServiceKeys:
    """HMAC key for tokens/cookies and the AES-256-GCM key for biometric templates."""

    secret_key: bytes
    template_key: bytes


def load_or_create(settings: Settings) -> ServiceKeys:
    """Keys from settings; where empty, from `<data_dir>/keys.json` (created on first run)."""
    path = settings.data_dir / "keys.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    changed = False
    for name in ("secret_key", "template_key"):
        if name not in stored:
            stored[name] = base64.b64encode(secrets.token_bytes(32)).decode()
            changed = True
    if changed and not (
        settings.auth.secret_key.get_secret_value() and settings.auth.template_key.get_secret_value()
    ):
        _write_private(path, json.dumps(stored))
    secret = settings.auth.secret_key.get_secret_value() or stored["secret_key"]
    template = settings.auth.template_key.get_secret_value() or stored["template_key"]
    template_key = base64.b64decode(template)
    if len(template_key) != 32:
        raise ValueError("KUZET_AUTH__TEMPLATE_KEY must be base64 of exactly 32 bytes")
    return ServiceKeys(secret_key=secret.encode(), template_key=template_key)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def encrypt_template(key: bytes, plaintext: bytes, person_id: str) -> tuple[bytes, bytes]:
    """AES-256-GCM with the person id as associated data; returns (nonce, ciphertext)."""
    nonce = secrets.token_bytes(12)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, person_id.encode())


def decrypt_template(key: bytes, nonce: bytes, ciphertext: bytes, person_id: str) -> bytes:
    """Inverse of `encrypt_template`; raises InvalidTag if altered or moved to another person."""
    return AESGCM(key).decrypt(nonce, ciphertext, person_id.encode())
