"""Item 9: signed audit checkpoints let `kuzet audit verify --checkpoint F` notice deleted tail rows,
which the hash chain alone cannot (a shorter chain is still a valid chain). Both database profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from media_server.cli import main
from media_server.db import audit
from media_server.db.audit import CheckpointError, make_checkpoint, read_checkpoint
from media_server.keys import load_or_create_signing_key
from media_server.package import public_key_b64
from tests.api.conftest import Api


@pytest.fixture
def cli_env(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUZET_DATA_DIR", str(api.settings.data_dir))
    monkeypatch.setenv("KUZET_DATABASE__URL", api.settings.database.url)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args])


def _append(api: Api, n: int) -> None:
    with api.services.sessions.begin() as db:
        for i in range(n):
            audit.append(db, "test", "probe", "test", f"t-{i}", {"i": i})


def _delete_rows_from(api: Api, first_id: int) -> None:
    """What someone with database access does: switch the append-only trigger off and cut the tail."""
    with api.services.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM audit_log WHERE id >= :i"), {"i": first_id})
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            triggers = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
            ).all()
            for name, _ in triggers:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
            conn.execute(text("DELETE FROM audit_log WHERE id >= :i"), {"i": first_id})
            for _, sql in triggers:
                conn.execute(text(sql))


@pytest.mark.usefixtures("cli_env")
def test_checkpoint_catches_deleted_tail_rows(api: Api, tmp_path: Path) -> None:
    _append(api, 3)
    checkpoint = tmp_path / "checkpoint.json"
    made = _cli("checkpoint", "--out", str(checkpoint))
    assert made.exit_code == 0, made.output
    doc = json.loads(checkpoint.read_text())
    assert doc["count"] == doc["head_id"] > 3 and len(doc["signature"]) > 40
    _append(api, 2)  # the log goes on growing after the checkpoint
    ok = _cli("verify", "--checkpoint", str(checkpoint))
    assert ok.exit_code == 0 and "contains checkpoint row" in ok.output, ok.output
    # Without the checkpoint a cut tail is invisible; with it, verification fails.
    _delete_rows_from(api, doc["head_id"] - 1)
    assert _cli("verify").exit_code == 0
    broken = _cli("verify", "--checkpoint", str(checkpoint))
    assert broken.exit_code == 1, broken.output
    assert "head_mismatch" in broken.output and f"row {doc['head_id']}" in broken.output, broken.output


@pytest.mark.usefixtures("cli_env")
def test_forged_or_altered_checkpoint_is_rejected(api: Api, tmp_path: Path) -> None:
    service_key = load_or_create_signing_key(api.settings.data_dir)
    with api.services.sessions() as db:
        genuine = make_checkpoint(db, service_key)
        forged = make_checkpoint(db, Ed25519PrivateKey.generate())
    pub = public_key_b64(service_key)
    assert read_checkpoint(genuine, pub).count == genuine["count"]
    with pytest.raises(CheckpointError, match="another key"):
        read_checkpoint(forged, pub)
    lowered = {**genuine, "count": genuine["count"] - 1}
    with pytest.raises(CheckpointError, match="signature"):
        read_checkpoint(lowered, pub)
    path = tmp_path / "lowered.json"
    path.write_text(json.dumps(lowered))
    rejected = _cli("verify", "--checkpoint", str(path))
    assert rejected.exit_code == 1 and "rejected" in rejected.output


@pytest.mark.usefixtures("cli_env")
def test_checkpoint_count_mismatch_is_reported(api: Api) -> None:
    key = load_or_create_signing_key(api.settings.data_dir)
    with api.services.sessions() as db:
        doc = make_checkpoint(db, key)
    anchor = read_checkpoint(doc, public_key_b64(key))
    with api.services.sessions() as db:
        assert audit.verify_chain(db, expected_head=anchor.head, expected_count=anchor.count).ok
        report = audit.verify_chain(db, expected_head=anchor.head, expected_count=anchor.count + 1)
    assert not report.ok and "counted" in (report.reason or "")
