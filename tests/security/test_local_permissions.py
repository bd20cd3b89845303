"""Item 7: the embedded default keeps evidence files read-only (0444), every evidence folder and the
SQLite database private (0700 / 0600), also when the data directory already existed with loose modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.evidence.local import LocalEvidenceStore
from media_server.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_evidence_are_private_in_a_running_app(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", models={"dir": Path("var/models").resolve()})
    with TestClient(create_app(settings)) as client:
        store = client.app.state.services.store  # type: ignore[attr-defined]
        stored = store.put_bytes(b"\xff\xd8 a frame", content_type="image/jpeg")
        db = settings.data_dir / "kuzet.db"
        assert _mode(db) == 0o600
        for extra in (db.with_name("kuzet.db-wal"), db.with_name("kuzet.db-shm")):
            if extra.exists():
                assert _mode(extra) & 0o077 == 0, extra
        blob = settings.evidence_dir / stored.key
        assert _mode(blob) == 0o444 and _mode(blob.with_name(blob.name + ".json")) == 0o444
        folder = blob.parent
        while True:
            assert _mode(folder) == 0o700, folder
            if folder == settings.evidence_dir:
                break
            folder = folder.parent


def test_loose_existing_folders_and_database_are_tightened(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    (root / "sha256").mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)
    os.chmod(root / "sha256", 0o777)
    store = LocalEvidenceStore(root, retention_days=1)
    stored = store.put_bytes(b"reading", content_type="application/json")
    assert _mode(root) == 0o700 and _mode(root / "sha256") == 0o700
    assert _mode(root / stored.key) == 0o444

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    db = data_dir / "kuzet.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    settings = Settings(data_dir=data_dir, models={"dir": Path("var/models").resolve()})
    with TestClient(create_app(settings)):
        assert _mode(db) == 0o600
