"""The evidence-signing key every node shares: file (KUZET_EVIDENCE__SIGNING_KEY_FILE or file:), env: and command: providers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Request

from identity.checks import CheckKind, CheckResult, Outcome
from media_server import keys
from media_server.cli import main
from media_server.db.enums import SessionKind, SessionStatus
from media_server.db.models import CheckSession, Person
from media_server.keys import load_or_create, load_signing_key
from media_server.package import fingerprint, public_key_b64
from media_server.services import build_services
from media_server.settings import Settings
from media_server.verdict import write_verdict
from tests.support.verdicts import signed_manifest


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


# ------------------------------------------------------------------ providers: file:, env:, command:
SIGNER = Path(__file__).resolve().parents[1] / "support" / "signer.py"


def _pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _command(key_file: Path, *extra: str) -> str:
    import shlex
    import sys

    return "command:" + shlex.join([sys.executable, str(SIGNER), str(key_file), *extra])


@pytest.fixture
def shared_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "kms" / "evidence.pem"
    path.parent.mkdir()
    path.write_bytes(_pem(key))
    return key, path


def test_every_provider_signs_with_the_one_published_key(
    tmp_path: Path, shared_key: tuple[Ed25519PrivateKey, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, path = shared_key
    monkeypatch.setenv("KMS_EVIDENCE_PEM", _pem(key).decode())
    specs = {"file": f"file:{path}", "env": "env:KMS_EVIDENCE_PEM", "command": _command(path)}
    expected = public_key_b64(key)
    for name, spec in specs.items():
        node = tmp_path / f"node-{name}"
        signer = load_or_create(Settings(data_dir=node, evidence={"signing_key": spec})).evidence_key()
        assert public_key_b64(signer) == expected, name
        signature = signer.sign(b"manifest " + name.encode())
        key.public_key().verify(signature, b"manifest " + name.encode())  # raises when it does not verify
        assert not (node / "evidence_signing_key.pem").exists(), name  # nothing generated per node

    # `kuzet evidence pubkey` publishes the same key whichever provider a node uses
    for spec in specs.values():
        monkeypatch.setenv("KUZET_DATA_DIR", str(tmp_path / "cli"))
        monkeypatch.setenv("KUZET_EVIDENCE__SIGNING_KEY", spec)
        printed = CliRunner().invoke(main, ["evidence", "pubkey"])
        assert (
            printed.exit_code == 0 and expected in printed.output and fingerprint(expected) in printed.output
        )


def test_the_command_signer_never_sees_the_key_on_the_node(
    tmp_path: Path, shared_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    from media_server.keys import CommandSigner

    key, path = shared_key
    signer = load_signing_key(Settings(data_dir=tmp_path, evidence={"signing_key": _command(path)}))
    assert isinstance(signer, CommandSigner) and not isinstance(signer, Ed25519PrivateKey)
    assert not any(isinstance(v, Ed25519PrivateKey) for v in vars(signer).values())
    key.public_key().verify(signer.sign(b""), b"")


def test_signer_misconfiguration_is_refused_with_a_clear_error(
    tmp_path: Path, shared_key: tuple[Ed25519PrivateKey, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from media_server.keys import SignerUnavailable, SigningKeyError

    key, path = shared_key

    def load(spec: str, **more: object) -> object:
        return load_signing_key(Settings(data_dir=tmp_path, evidence={"signing_key": spec, **more}))

    with pytest.raises(ValidationError, match="signing_key"):
        load("vault:secret/evidence")  # an unknown provider
    with pytest.raises(ValidationError, match="not both"):
        load(f"file:{path}", signing_key_file=path)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load(f"file:{tmp_path / 'none.pem'}")
    monkeypatch.delenv("KMS_MISSING", raising=False)
    with pytest.raises(SigningKeyError, match=r"\$KMS_MISSING.*unset"):
        load("env:KMS_MISSING")
    monkeypatch.setenv("KMS_GARBAGE", "not a pem")
    with pytest.raises(SigningKeyError, match="PEM"):
        load("env:KMS_GARBAGE")
    with pytest.raises(SigningKeyError, match="was not found"):
        load(f"command:{tmp_path / 'no-such-signer'} --key evidence")
    with pytest.raises(SigningKeyError, match="exited with status"):
        load(_command(tmp_path / "none.pem"))  # the signer cannot read its key: no public key
    with pytest.raises(SigningKeyError, match="not base64|bytes, not 32"):
        load("command:/bin/echo")  # prints its arguments, not a key
    with pytest.raises(SigningKeyError, match="took longer"):
        load("command:/bin/sh -c 'sleep 5' sh", signer_timeout_s=0.5)  # a signer that hangs

    # A signer that signs with another key than it publishes, or that is down: nothing is signed.
    other = tmp_path / "other.pem"
    other.write_bytes(_pem(Ed25519PrivateKey.generate()))
    lying = load(_command(path, "--other-key", str(other)))
    with pytest.raises(SignerUnavailable, match="does not verify"):
        lying.sign(b"manifest")  # type: ignore[attr-defined]
    down = load(_command(path, "--fail"))
    with pytest.raises(SignerUnavailable, match="exited with status 1"):
        down.sign(b"manifest")  # type: ignore[attr-defined]

    # the CLI says what is wrong instead of a traceback
    monkeypatch.setenv("KUZET_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("KUZET_EVIDENCE__SIGNING_KEY", "env:KMS_MISSING")
    printed = CliRunner().invoke(main, ["evidence", "pubkey"])
    assert printed.exit_code == 2 and "KMS_MISSING" in printed.output


def test_a_signer_that_goes_down_is_a_503_with_retry_after(
    tmp_path: Path, shared_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    from fastapi.testclient import TestClient

    from media_server.app import create_app

    _, path = shared_key
    app = create_app(Settings(data_dir=tmp_path, evidence={"signing_key": _command(path, "--fail")}))

    @app.post("/test-sign")
    def sign(request: Request) -> dict[str, str]:
        return {"signature": request.app.state.services.signing_key.sign(b"manifest").hex()}

    with TestClient(app) as client:
        r = client.post("/test-sign")
    assert r.status_code == 503 and r.json()["error"] == "signer_unavailable", r.text
    assert r.headers["Retry-After"].isdigit()


def test_a_node_reads_its_signing_key_once_not_per_verdict(
    tmp_path: Path, shared_key: tuple[Ed25519PrivateKey, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, path = shared_key
    reads: list[Path] = []

    def counted_file_key(where: Path) -> Ed25519PrivateKey:
        reads.append(where)
        return real_file_key(where)

    real_file_key = keys._file_key
    monkeypatch.setattr(keys, "_file_key", counted_file_key)
    services = build_services(Settings(data_dir=tmp_path / "node", evidence={"signing_key": f"file:{path}"}))
    try:
        assert reads == [path]  # read at start...
        path.unlink()  # ...and never again: a node reading it per verdict could not sign from here on
        now = datetime.now(UTC)
        written = []
        for ref in ("case-1", "case-2"):
            with services.sessions.begin() as db:
                person = Person(external_ref=ref, display_name="Key Test")
                db.add(person)
                db.flush()
                session = CheckSession(
                    person_id=person.id,
                    kind=SessionKind.CHECKIN,
                    status=SessionStatus.ACTIVE,
                    window_start=now,
                    window_end=now + timedelta(minutes=5),
                )
                db.add(session)
                db.flush()
                session_id = session.id
            face = CheckResult(CheckKind.FACE, Outcome.PASS, "match", "Face matches.")
            written.append(write_verdict(services, session_id, [face], [CheckKind.FACE])[1])
        assert reads == [path]
        for verdict_id in written:
            assert signed_manifest(services, verdict_id, key.public_key())["verdict"]["decision"] == "pass"
    finally:
        services.engine.dispose()
