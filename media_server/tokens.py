"""Credentials: argon2 password hashes, HMAC-signed bearer tokens, one-time check-in tokens, device keys."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from media_server.errors import Unauthorized

_hasher = PasswordHasher()

# Longest credential accepted in a header (tokens and device keys are far shorter).
MAX_CREDENTIAL_CHARS = 4096


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None (absent, malformed, too long).

    The one parser of that header: the API (`auth.require_bearer`) and the /metrics guard both use it.
    """
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_CREDENTIAL_CHARS:
        return None
    return token


def hash_password(password: str) -> str:
    """argon2id hash of a password."""
    return str(_hasher.hash(password))


def check_password(stored_hash: str, password: str) -> bool:
    """True when `password` matches the stored argon2 hash."""
    try:
        return bool(_hasher.verify(stored_hash, password))
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(24))


def check_password_or_dummy(stored_hash: str | None, password: str) -> bool:
    """`check_password`, or (no such account) the same argon2 work on a dummy hash and False, so the
    response time does not tell whether a username exists."""
    if stored_hash is None:
        check_password(_dummy_hash(), password)
        return False
    return check_password(stored_hash, password)


@dataclass(frozen=True)
class Claims:
    """What a signed bearer token asserts; `jti` is its random id (logout revokes it)."""

    user_id: str
    role: str
    expires_at: float
    jti: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(key: bytes, user_id: str, role: str, ttl_s: int, now: float | None = None) -> str:
    """A compact HMAC-SHA256 token: base64(json claims).base64(mac), with a random id (`jti`)."""
    claims = {"uid": user_id, "role": role, "exp": (now or time.time()) + ttl_s, "jti": secrets.token_hex(16)}
    body = json.dumps(claims, separators=(",", ":")).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify_token(key: bytes, token: str, now: float | None = None) -> Claims:
    """Claims of a valid, unexpired token; raises Unauthorized otherwise."""
    try:
        body_b64, mac_b64 = token.split(".", 1)
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except ValueError as exc:
        raise Unauthorized("malformed token") from exc
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise Unauthorized("token signature is invalid")
    try:
        data = json.loads(body)
        claims = Claims(
            user_id=str(data["uid"]),
            role=str(data["role"]),
            expires_at=float(data["exp"]),
            jti=str(data["jti"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Unauthorized("malformed token") from exc
    if claims.expires_at < (now or time.time()):
        raise Unauthorized("token has expired; log in again")
    return claims


def new_secret_token(prefix: str) -> str:
    """A random credential like `ck_<43 url-safe chars>` (check-in links, device keys)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """The only form in which one-time tokens and device keys are stored: hex sha256."""
    return hashlib.sha256(token.encode()).hexdigest()
