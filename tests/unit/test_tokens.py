import pytest

from media_server.errors import Unauthorized
from media_server.keys import decrypt_template, encrypt_template
from media_server.tokens import check_password, hash_password, sign_token, token_hash, verify_token

KEY = b"k" * 32


def test_password_hash_roundtrip_and_wrong_password() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert check_password(stored, "correct horse battery")
    assert not check_password(stored, "wrong")
    assert not check_password("not-a-hash", "x")


def test_token_roundtrip_expiry_and_forgery() -> None:
    token = sign_token(KEY, "u1", "officer", ttl_s=60, now=1000.0)
    assert verify_token(KEY, token, now=1030.0).role == "officer"
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(KEY, token, now=2000.0)
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(b"x" * 32, token, now=1030.0)
    body, mac = token.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    with pytest.raises(Unauthorized):
        verify_token(KEY, forged, now=1030.0)
    with pytest.raises(Unauthorized, match="malformed"):
        verify_token(KEY, "garbage", now=1030.0)


def test_token_hash_is_stable_sha256() -> None:
    assert token_hash("ck_abc") == token_hash("ck_abc")
    assert len(token_hash("ck_abc")) == 64


def test_template_encryption_is_bound_to_the_person() -> None:
    nonce, ct = encrypt_template(b"t" * 32, b"embedding bytes", "person-1")
    assert b"embedding" not in ct
    assert decrypt_template(b"t" * 32, nonce, ct, "person-1") == b"embedding bytes"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        decrypt_template(b"t" * 32, nonce, ct, "person-2")
