"""Service secrets: taken from settings, or generated once into data_dir with 0600 permissions."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from media_server.settings import Settings

SIGNING_KEY_FILE = "evidence_signing_key.pem"


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


def load_or_create_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The service's Ed25519 evidence key from `<data_dir>/evidence_signing_key.pem`, created on first use.

    The file is PKCS#8 PEM, mode 0600; whoever can read it can sign packages, so back it up like
    the other keys in data_dir.
    """
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes creating the key at once must not end up with two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_signing_key(data_dir)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    return key
