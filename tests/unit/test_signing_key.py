"""One configured evidence signing key for every node (KUZET_EVIDENCE__SIGNING_KEY_FILE)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from media_server.cli import main
from media_server.keys import load_or_create, load_signing_key
from media_server.package import fingerprint, public_key_b64
from media_server.settings import Settings


def test_two_nodes_with_the_configured_file_sign_with_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "shared" / "evidence.pem"
    made = CliRunner().invoke(main, ["evidence", "keygen", "--out", str(key_file)])
    assert made.exit_code == 0, made.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(main, ["evidence", "keygen", "--out", str(key_file)])
    assert again.exit_code == 1 and "refusing" in again.output

    nodes = [
        load_or_create(Settings(data_dir=tmp_path / name, evidence={"signing_key_file": key_file}))
        for name in ("node-a", "node-b")
    ]
    pubs = {public_key_b64(n.evidence_key()) for n in nodes}
    assert len(pubs) == 1
    assert not (tmp_path / "node-a" / "evidence_signing_key.pem").exists()  # nothing generated per node
    signature = nodes[0].evidence_key().sign(b"manifest")
    nodes[1].evidence_key().public_key().verify(signature, b"manifest")

    monkeypatch.setenv("KUZET_DATA_DIR", str(tmp_path / "node-c"))
    monkeypatch.setenv("KUZET_EVIDENCE__SIGNING_KEY_FILE", str(key_file))
    printed = CliRunner().invoke(main, ["evidence", "pubkey"])
    (pub,) = pubs
    assert printed.exit_code == 0 and pub in printed.output and fingerprint(pub) in printed.output
    assert pub in made.output


def test_without_a_file_each_data_dir_keeps_its_own_key(tmp_path: Path) -> None:
    a = load_signing_key(Settings(data_dir=tmp_path / "a"))
    assert public_key_b64(a) == public_key_b64(load_signing_key(Settings(data_dir=tmp_path / "a")))
    assert public_key_b64(a) != public_key_b64(load_signing_key(Settings(data_dir=tmp_path / "b")))


def test_a_missing_or_wrong_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_signing_key(Settings(data_dir=tmp_path, evidence={"signing_key_file": tmp_path / "none.pem"}))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

    wrong = tmp_path / "ec.pem"
    wrong.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_signing_key(Settings(data_dir=tmp_path, evidence={"signing_key_file": wrong}))
    assert isinstance(load_signing_key(Settings(data_dir=tmp_path)), Ed25519PrivateKey)
