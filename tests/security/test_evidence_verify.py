"""Item 8: `kuzet evidence verify` fails without a trusted key (or pinned fingerprint) and when
verdict.json disagrees with the package's own audit segment, on packages exported by the real API."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from media_server.cli import main
from media_server.db.enums import Decision, Role
from media_server.keys import load_or_create_signing_key
from media_server.package import MANIFEST, PUBLIC_KEY, SIGNATURE, fingerprint, public_key_b64
from tests.api.conftest import Api
from tests.security.support import seed_judged_session


def _export(api: Api, session_id: str) -> bytes:
    r = api.client.get(f"/api/v1/sessions/{session_id}/package", headers=api.as_(Role.REVIEWER))
    assert r.status_code == 200, r.text
    return bytes(r.content)


def _forge(package: bytes, key: Ed25519PrivateKey, decision: str) -> bytes:
    """Change the verdict's decision, fix the manifest hashes and sign it with `key`."""
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    verdicts = json.loads(members["verdict.json"])
    for v in verdicts:
        v["decision"] = decision
        v["reasons"] = []
    members["verdict.json"] = json.dumps(verdicts).encode()
    members[PUBLIC_KEY] = public_key_b64(key).encode()
    manifest = json.loads(members[MANIFEST])
    for f in manifest["files"]:
        if f["path"] in members:
            data = members[f["path"]]
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    members[MANIFEST] = json.dumps(manifest).encode()
    members[SIGNATURE] = base64.b64encode(key.sign(members[MANIFEST]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _verify(path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["evidence", "verify", str(path), *args], env=env)
    return result.exit_code, result.output


def test_genuine_package_verifies_only_against_a_trusted_key(api: Api, tmp_path: Path) -> None:
    package = tmp_path / "case.zip"
    package.write_bytes(_export(api, seed_judged_session(api, Decision.FAIL)))
    pub = public_key_b64(load_or_create_signing_key(api.settings.data_dir))
    code, out = _verify(package, "--pubkey", pub)
    assert code == 0 and "result       OK" in out, out
    code, out = _verify(package, "--fingerprint", "SHA256:" + fingerprint(pub).upper())
    assert code == 0 and "(trusted)" in out, out
    code, out = _verify(package)
    assert code == 1 and "no trusted key" in out and "result       FAILED" in out, out


@pytest.mark.parametrize("trust", ["none", "pubkey", "fingerprint"])
def test_verdict_changed_and_resigned_with_another_key_fails(api: Api, tmp_path: Path, trust: str) -> None:
    package = tmp_path / "forged.zip"
    package.write_bytes(
        _forge(_export(api, seed_judged_session(api, Decision.FAIL)), Ed25519PrivateKey.generate(), "pass")
    )
    pub = public_key_b64(load_or_create_signing_key(api.settings.data_dir))
    args = {"none": [], "pubkey": ["--pubkey", pub], "fingerprint": ["--fingerprint", fingerprint(pub)]}[
        trust
    ]
    code, out = _verify(package, *args)
    assert code == 1 and "result       FAILED" in out, out
    assert "says 'pass', the audit log recorded 'fail'" in out, out


def test_verdict_changed_by_the_key_holder_fails_the_audit_cross_check(api: Api, tmp_path: Path) -> None:
    # Even with the service's own key, verdict.json cannot silently disagree with the audit rows.
    service_key = load_or_create_signing_key(api.settings.data_dir)
    package = tmp_path / "insider.zip"
    package.write_bytes(_forge(_export(api, seed_judged_session(api, Decision.FAIL)), service_key, "pass"))
    code, out = _verify(package, "--pubkey", public_key_b64(service_key))
    assert code == 1 and "the audit log recorded 'fail'" in out, out


def test_a_fingerprint_pinned_in_the_environment_is_the_trusted_key(api: Api, tmp_path: Path) -> None:
    """KUZET_EVIDENCE_FINGERPRINT (what `kuzet evidence pubkey` prints, pinned once on the verifying
    machine) trusts the service's key and nothing else."""
    published = CliRunner().invoke(
        main, ["evidence", "pubkey"], env={"KUZET_DATA_DIR": str(api.settings.data_dir)}
    )
    assert published.exit_code == 0, published.output
    pinned = {"KUZET_EVIDENCE_FINGERPRINT": published.output.split("fingerprint", 1)[1].strip()}
    session_id = seed_judged_session(api, Decision.FAIL)
    genuine, forged = tmp_path / "case.zip", tmp_path / "forged.zip"
    genuine.write_bytes(_export(api, session_id))
    forged.write_bytes(_forge(genuine.read_bytes(), Ed25519PrivateKey.generate(), "fail"))  # same verdict

    code, out = _verify(genuine, env=pinned)
    assert code == 0 and "(trusted)" in out and "result       OK" in out, out
    code, out = _verify(forged, env=pinned)
    assert code == 1 and "not the pinned one" in out and "result       FAILED" in out, out
    code, out = _verify(genuine, env={"KUZET_EVIDENCE_FINGERPRINT": "SHA256:" + "0" * 64})
    assert code == 1 and "not the pinned one" in out, out
