"""Service secrets: taken from settings, or generated once into data_dir with 0600 permissions.

The evidence-signing key comes from a provider named by `KUZET_EVIDENCE__SIGNING_KEY` (see
`load_signing_key`): a PEM file, a PEM in an environment variable, or an external signer command (a
KMS/HSM wrapper) so the private key never lives on the node. Whatever the provider, the service only
sees an `EvidenceSigner`: sign bytes, tell the public key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from media_server.settings import Settings

SIGNING_KEY_FILE = "evidence_signing_key.pem"
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


class EvidenceSigner(Protocol):
    """What signs manifests, packages and audit checkpoints (an `Ed25519PrivateKey` is one)."""

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature (64 bytes) of `data`."""
        ...

    def public_key(self) -> Ed25519PublicKey:
        """The public key every signature verifies against."""
        ...


class SigningKeyError(ValueError):
    """The configured evidence-signing key cannot be loaded (a misconfiguration: the node must not start)."""


class SignerUnavailable(RuntimeError):
    """The external signer failed to sign (nothing is signed; the caller retries later)."""


class CommandSigner:
    """An external signer process: the private key stays with it (a KMS/HSM client, a signing service).

    Protocol: `<command> public-key` prints the base64 raw 32-byte Ed25519 public key; `<command> sign`
    reads the bytes to sign on stdin and prints the base64 64-byte signature. Exit status 0 on success.
    The public key is read once; every signature is verified against it before it is used, so a signer
    that answers with another key's signature is refused, never stored.
    """

    def __init__(self, argv: list[str], timeout_s: float) -> None:
        self._argv = argv
        self._timeout_s = timeout_s
        try:
            raw = _b64_exact(self._run("public-key", b""), ED25519_PUBLIC_BYTES, "public key")
        except SignerUnavailable as exc:
            raise SigningKeyError(f"the signer command gave no public key: {exc}") from exc
        self._public = Ed25519PublicKey.from_public_bytes(raw)

    def _run(self, verb: str, data: bytes) -> bytes:
        try:
            done = subprocess.run(
                [*self._argv, verb], input=data, capture_output=True, timeout=self._timeout_s, check=False
            )
        except FileNotFoundError as exc:
            raise SignerUnavailable(f"{self._argv[0]} was not found") from exc
        except PermissionError as exc:
            raise SignerUnavailable(f"{self._argv[0]} is not executable") from exc
        except subprocess.TimeoutExpired as exc:
            raise SignerUnavailable(f"`{verb}` took longer than {self._timeout_s} s") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-300:]
            raise SignerUnavailable(f"`{verb}` exited with status {done.returncode}: {err}")
        return done.stdout

    def sign(self, data: bytes) -> bytes:
        """Sign through the external command; SignerUnavailable when it fails or answers wrongly."""
        signature = _b64_exact(self._run("sign", data), ED25519_SIGNATURE_BYTES, "signature")
        try:
            self._public.verify(signature, data)
        except InvalidSignature as exc:
            raise SignerUnavailable("the signer's signature does not verify against its public key") from exc
        return signature

    def public_key(self) -> Ed25519PublicKey:
        """The public key the signer published at start."""
        return self._public


def _b64_exact(text: bytes, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignerUnavailable(f"the {what} is not base64") from exc
    if len(raw) != size:
        raise SignerUnavailable(f"the {what} has {len(raw)} bytes, not {size}")
    return raw


def _pem_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{where} does not hold an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where} does not hold an Ed25519 private key")
    return key


@dataclass(frozen=True)
class ServiceKeys:
    """HMAC key for tokens/cookies, the AES-256-GCM key for biometric templates, and the Ed25519 key
    that signs evidence manifests and packages (loaded once per node)."""

    secret_key: bytes
    template_key: bytes
    signing_key: EvidenceSigner | None = None

    def evidence_key(self) -> EvidenceSigner:
        """The evidence signing key; a node built without one cannot sign."""
        if self.signing_key is None:
            raise RuntimeError("no evidence signing key was loaded for this node")
        return self.signing_key


def signing_key_configured(settings: Settings) -> bool:
    """Whether a shared key is configured (else each data_dir makes its own)."""
    return bool(settings.evidence.signing_key) or settings.evidence.signing_key_file is not None


def load_signing_key(settings: Settings) -> EvidenceSigner:
    """The evidence signer named by `evidence.signing_key`; SigningKeyError when it cannot be loaded.

    - `file:PATH`: an Ed25519 PKCS#8 PEM file shared by every node (`kuzet evidence keygen`);
    - `env:NAME`: the same PEM in the environment variable NAME (from a secret manager);
    - `command:CMD ARGS`: an external signer (`CommandSigner`); the private key never lives on the node.
    Unset: `evidence.signing_key_file` when set (the older spelling of `file:`), else
    `<data_dir>/evidence_signing_key.pem`, created on first use (one node only). Never created here.
    """
    spec = settings.evidence.signing_key
    legacy = settings.evidence.signing_key_file
    if not spec:
        return load_or_create_signing_key(settings.data_dir) if legacy is None else _file_key(legacy)
    scheme, _, rest = spec.partition(":")
    if scheme == "file":
        return _file_key(Path(rest))
    if scheme == "env":
        value = os.environ.get(rest, "")
        if not value.strip():
            raise SigningKeyError(f"KUZET_EVIDENCE__SIGNING_KEY names ${rest}, which is unset or empty")
        return _pem_key(value.encode(), f"${rest}")
    if scheme == "command":
        argv = shlex.split(rest)
        if not argv:
            raise SigningKeyError("KUZET_EVIDENCE__SIGNING_KEY command: names no program")
        return CommandSigner(argv, settings.evidence.signer_timeout_s)
    raise SigningKeyError(f"KUZET_EVIDENCE__SIGNING_KEY: unknown provider {scheme!r} (file, env, command)")


def _file_key(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(f"the evidence signing key file {path} does not exist") from exc
    except OSError as exc:
        raise SigningKeyError(f"the evidence signing key file {path} cannot be read: {exc}") from exc
    return _pem_key(pem, f"the evidence signing key file {path}")


def write_signing_key(path: Path) -> Ed25519PrivateKey:
    """Generate a new Ed25519 evidence key into `path` (PKCS#8 PEM, mode 0600); refuses to overwrite."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


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
    return ServiceKeys(
        secret_key=secret.encode(), template_key=template_key, signing_key=load_signing_key(settings)
    )


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
        return _pem_key(path.read_bytes(), str(path))
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
