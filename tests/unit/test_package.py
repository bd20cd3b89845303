"""Evidence packages: export from a migrated SQLite + local store, verify, and catch tampering."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from media_server.cli import main
from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory
from media_server.db.enums import ArtifactKind, Decision, Role, SessionKind, SessionStatus
from media_server.db.migrate import upgrade
from media_server.db.models import Artifact, CheckResultRecord, CheckSession, Person, Review, User, Verdict
from media_server.evidence.local import LocalEvidenceStore
from media_server.keys import load_or_create_signing_key
from media_server.package import (
    MANIFEST,
    PUBLIC_KEY,
    SIGNATURE,
    _extension,
    export_package,
    fingerprint,
    public_key_b64,
    verify_package,
)

FACE_MODEL = ModelStamp("dlib_face_recognition_resnet", "1.0", "ab" * 32)


@dataclass
class World:
    factory: sessionmaker[Session]
    store: LocalEvidenceStore
    key: Ed25519PrivateKey
    session_id: str
    data_dir: Path
    db_url: str


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    data_dir = tmp_path / "var"
    url = f"sqlite:///{data_dir / 'kuzet.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    store = LocalEvidenceStore(data_dir / "evidence", retention_days=30)
    with factory() as db:
        person = Person(external_ref="case-42", display_name="Test Person")
        reviewer = User(username="rev", password_hash="x", role=Role.REVIEWER)
        db.add_all([person, reviewer])
        db.flush()
        audit.append(db, "officer:1", "person.enrolled", "person", person.id, {"templates": 2})
        audit.append(db, "officer:1", "unrelated", "person", "someone-else", {"n": 1})
        now = datetime(2026, 11, 23, 4, 10, tzinfo=UTC)
        s = CheckSession(
            person_id=person.id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.COMPLETED,
            window_start=now - timedelta(minutes=10),
            window_end=now + timedelta(minutes=50),
            started_at=now,
            ended_at=now + timedelta(minutes=2),
        )
        db.add(s)
        db.flush()
        audit.append(db, "person", "session.started", "session", s.id, {})
        for blob, ctype, kind in (
            (b"\x1aE\xdf\xa3 fake webm recording " * 50, "video/webm", ArtifactKind.RECORDING),
            (b"\xff\xd8\xff\xe0 jpeg frame", "image/jpeg", ArtifactKind.FRAME),
        ):
            stored = store.put_bytes(blob, content_type=ctype)
            art = Artifact(
                session_id=s.id,
                key=stored.key,
                sha256=stored.sha256,
                size=stored.size,
                content_type=ctype,
                kind=kind,
            )
            db.add(art)
            db.flush()
            audit.append(db, "pipeline", "artifact.stored", "artifact", art.id, {"session_id": s.id})
        check = CheckResult(
            CheckKind.FACE, Outcome.FAIL, "mismatch", "Face does not match", 0.71, 0.6, FACE_MODEL
        )
        db.add(CheckResultRecord.from_check(s.id, check))
        verdict = Verdict(
            session_id=s.id,
            decision=Decision.REVIEW,
            reasons=["unsure: face"],
            policy_version="2026.11-1",
            thresholds={"face.mismatch": 0.6},
            models={FACE_MODEL.name: FACE_MODEL.to_dict()},
            manifest_sha256="cd" * 32,
        )
        db.add(verdict)
        db.flush()
        audit.append(db, "pipeline", "verdict.written", "verdict", verdict.id, {"decision": "review"})
        db.add(
            Review(
                session_id=s.id,
                verdict_id=verdict.id,
                reviewer_id=reviewer.id,
                decision=Decision.PASS,
                comment="same person, poor light",
            )
        )
        audit.append(db, "officer:1", "unrelated.again", "person", "someone-else", {"n": 2})
        db.commit()
        sid = s.id
    yield World(factory, store, load_or_create_signing_key(data_dir), sid, data_dir, url)
    engine.dispose()


def _export(world: World) -> bytes:
    with world.factory() as db:
        return export_package(db, world.store, world.session_id, world.key, exporter="officer:1")


def _rewrite(package: bytes, change: dict[str, bytes | None], add: dict[str, bytes] | None = None) -> bytes:
    """A new ZIP with members replaced (None drops them) or added: a well-formed archive, so only
    our own checks can notice."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in change:
                data = change[info.filename]
                if data is not None:
                    dst.writestr(info.filename, data)
            else:
                dst.writestr(info, src.read(info.filename))
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


def _resign(package: bytes, key: Ed25519PrivateKey, change: dict[str, bytes]) -> bytes:
    """What a forger with their own key can do: change members, fix the manifest, sign it again."""
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    change = {**change, PUBLIC_KEY: public_key_b64(key).encode()}
    for f in manifest["files"]:
        if f["path"] in change:
            f["sha256"], f["size"] = hashlib.sha256(change[f["path"]]).hexdigest(), len(change[f["path"]])
    manifest_bytes = json.dumps(manifest).encode()
    return _rewrite(
        package, {**change, MANIFEST: manifest_bytes, SIGNATURE: base64.b64encode(key.sign(manifest_bytes))}
    )


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1 :]


def test_export_then_verify_ok(world: World) -> None:
    package = _export(world)
    pub = public_key_b64(world.key)
    report = verify_package(package, pub)
    assert report.ok, report.problems
    assert report.key_trusted and report.key_fingerprint == fingerprint(pub)
    assert report.session_id == world.session_id
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
        checks = json.loads(zf.read("checks.json"))
        segment = json.loads(zf.read("audit.json"))["rows"]
        for art in manifest["artifacts"]:
            assert art["key"].endswith(art["sha256"])
            assert world.store.get_bytes(art["key"]) == zf.read(art["path"])
    assert {
        "checks.json",
        "verdict.json",
        "reviews.json",
        "audit.json",
        "README.txt",
        PUBLIC_KEY,
        SIGNATURE,
    } <= names
    assert len(manifest["artifacts"]) == 2 and manifest["unavailable"] == []
    assert {f["path"] for f in manifest["files"]} == names - {MANIFEST, SIGNATURE}
    assert manifest["models"][FACE_MODEL.name]["weights_sha256"] == FACE_MODEL.weights_sha256
    assert manifest["thresholds"]["face.mismatch"] == 0.6
    assert manifest["exporter"] == "officer:1" and manifest["audit"]["chain_verified_at_export"]
    assert checks[0]["model"]["version"] == "1.0"
    # The segment runs from the person's first entry to the export; other subjects keep only links.
    assert segment[0]["action"] == "person.enrolled" and segment[-1]["action"] == "evidence.export"
    redacted = [r for r in segment if "action" not in r]
    assert len(redacted) == 2 and all(set(r) == {"id", "prev_hash", "row_hash"} for r in redacted)
    assert report.audit_rows == len(segment)
    # The export is itself audited, and the live chain still verifies.
    with world.factory() as db:
        assert audit.verify_chain(db).ok


def test_the_recording_is_a_member_under_its_container_extension_with_its_sha256(world: World) -> None:
    package = _export(world)
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        (webm,) = [n for n in zf.namelist() if n.endswith(".webm")]
        data = zf.read(webm)
    assert data.startswith(b"\x1aE\xdf\xa3")  # the EBML header of the stored WebM, byte for byte
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert listed[webm] == hashlib.sha256(data).hexdigest()
    assert _extension("video/x-matroska") == ".mkv" and _extension("video/webm; codecs=vp8") == ".webm"


def test_any_altered_member_fails_naming_it(world: World) -> None:
    package = _export(world)
    pub = public_key_b64(world.key)
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    for name, data in members.items():
        report = verify_package(_rewrite(package, {name: _flip(data)}), pub)
        assert not report.ok, name
        expected = {MANIFEST: SIGNATURE, SIGNATURE: SIGNATURE}.get(name, name)
        assert any(expected in p for p in report.problems), (name, report.problems)


def test_tampered_manifest_fails_the_signature(world: World) -> None:
    package = _export(world)
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    manifest["thresholds"]["face.mismatch"] = 0.99
    report = verify_package(_rewrite(package, {MANIFEST: json.dumps(manifest).encode()}), None)
    assert not report.ok
    assert any("signature does not match" in p for p in report.problems)


def test_resigned_package_fails_against_the_trusted_key(world: World) -> None:
    package = _export(world)
    forged = _resign(package, Ed25519PrivateKey.generate(), {"verdict.json": b"[]"})
    unchecked = verify_package(forged, None)
    assert not unchecked.ok  # self-consistent, but no trusted key was given: never OK
    assert any("no trusted key" in p for p in unchecked.problems), unchecked.problems
    report = verify_package(forged, public_key_b64(world.key))
    assert any("another key" in p for p in report.problems)
    pinned = verify_package(forged, trusted_fingerprint=fingerprint(public_key_b64(world.key)))
    assert any("not the pinned one" in p for p in pinned.problems), pinned.problems
    # The forged verdict.json also contradicts the package's own audit segment.
    assert any("verdict.json" in p and "missing" in p for p in unchecked.problems), unchecked.problems


def test_added_removed_and_corrupted_members_fail(world: World) -> None:
    package = _export(world)
    added = verify_package(_rewrite(package, {}, add={"artifacts/extra.jpg": b"planted"}))
    assert any("artifacts/extra.jpg" in p and "not listed" in p for p in added.problems)
    removed = verify_package(_rewrite(package, {"reviews.json": None}))
    assert any("reviews.json" in p and "missing" in p for p in removed.problems)
    # A raw byte flipped inside the archive (not rewritten): the member's CRC or hash fails.
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        info = zf.getinfo(
            "artifacts/" + next(n.split("/")[1] for n in zf.namelist() if n.startswith("artifacts/"))
        )
    raw = bytearray(package)
    # Local header: 30 fixed bytes, then the name and the extra field (lengths at offsets 26 and 28).
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    offset = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    raw[offset] ^= 0xFF
    corrupted = verify_package(bytes(raw))
    assert any(info.filename in p for p in corrupted.problems), corrupted.problems
    assert not verify_package(b"not a zip").ok


def test_audit_segment_with_a_dropped_or_edited_row_fails(world: World) -> None:
    package = _export(world)
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        rows = json.loads(zf.read("audit.json"))["rows"]
    pub = public_key_b64(world.key)
    # Re-signed with the service key itself, so only the chain check can notice.
    dropped = _resign(package, world.key, {"audit.json": json.dumps({"rows": rows[:1] + rows[2:]}).encode()})
    report = verify_package(dropped, pub)
    assert any("audit.json" in p and "missing" in p for p in report.problems), report.problems
    edited_rows = json.loads(json.dumps(rows))
    edited_rows[0]["details"]["templates"] = 3
    edited = _resign(package, world.key, {"audit.json": json.dumps({"rows": edited_rows}).encode()})
    report = verify_package(edited, pub)
    assert any("audit.json" in p and "altered" in p for p in report.problems), report.problems


def test_signing_key_is_created_once_and_private(world: World) -> None:
    again = load_or_create_signing_key(world.data_dir)
    assert public_key_b64(again) == public_key_b64(world.key)
    assert (world.data_dir / "evidence_signing_key.pem").stat().st_mode & 0o077 == 0


def test_cli_export_verify_and_pubkey(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUZET_DATA_DIR", str(world.data_dir))
    monkeypatch.setenv("KUZET_EVIDENCE__RETENTION_DAYS", "30")
    runner = CliRunner()
    pub = runner.invoke(main, ["evidence", "pubkey"])
    assert pub.exit_code == 0 and public_key_b64(world.key) in pub.output
    out = tmp_path / "pkg.zip"
    exported = runner.invoke(main, ["evidence", "export", world.session_id, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    ok = runner.invoke(main, ["evidence", "verify", str(out), "--pubkey", public_key_b64(world.key)])
    assert ok.exit_code == 0 and "result       OK" in ok.output
    pinned = runner.invoke(
        main, ["evidence", "verify", str(out), "--fingerprint", fingerprint(public_key_b64(world.key))]
    )
    assert pinned.exit_code == 0 and "(trusted)" in pinned.output, pinned.output
    untrusted = runner.invoke(main, ["evidence", "verify", str(out)])
    assert untrusted.exit_code == 1 and "no trusted key" in untrusted.output
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_rewrite(out.read_bytes(), {"verdict.json": b"[]"}))
    failed = runner.invoke(main, ["evidence", "verify", str(bad)])
    assert failed.exit_code == 1 and "verdict.json" in failed.output
    missing = runner.invoke(main, ["evidence", "export", "no-such-session", "--out", str(tmp_path / "x.zip")])
    assert missing.exit_code == 1 and not (tmp_path / "x.zip").exists()
