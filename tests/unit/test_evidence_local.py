"""The local-directory evidence store: content addressing, verify-on-read, retention, legal hold."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from media_server.evidence import (
    EvidenceStore,
    IntegrityError,
    LocalEvidenceStore,
    NotFound,
    ObjectLocked,
    build_store,
    key_for,
)
from media_server.evidence.port import HashingReader, parse_timestamp
from media_server.settings import S3Settings, Settings

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
PHOTO = DATA / "pad" / "true_001.jpg"
RETENTION_DAYS = 30


class FakeClock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> LocalEvidenceStore:
    return LocalEvidenceStore(tmp_path / "evidence", retention_days=RETENTION_DAYS, clock=clock)


def test_round_trip_of_a_real_photo(store: LocalEvidenceStore, clock: FakeClock) -> None:
    content = PHOTO.read_bytes()
    digest = hashlib.sha256(content).hexdigest()

    artifact = store.put_file(
        PHOTO, content_type="image/jpeg", metadata={"session-id": "s-1", "kind": "breath"}
    )

    assert artifact.key == f"sha256/{digest[:2]}/{digest}" == key_for(digest)
    assert artifact.sha256 == digest and artifact.size == len(content)
    assert artifact.retain_until == clock.now + timedelta(days=RETENTION_DAYS)
    assert not artifact.spooled and not artifact.legal_hold
    assert store.get_bytes(artifact.key) == content
    with store.open_verified(artifact.key) as verified:
        assert verified.read() == content
    again = store.stat(artifact.key)
    assert again == artifact
    assert dict(again.metadata) == {"session-id": "s-1", "kind": "breath"}
    blob = store.root / artifact.key
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert list(store.keys()) == [artifact.key]
    assert not list((store.root / ".tmp").iterdir())  # no leftover temporary files


def test_put_bytes_and_put_file_agree(store: LocalEvidenceStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB write chunks
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    from_bytes = store.put_bytes(data)
    from_file = store.put_file(path)
    assert from_bytes.key == from_file.key
    assert store.get_bytes(from_file.key) == data


def test_tampered_bytes_fail_verification(store: LocalEvidenceStore) -> None:
    artifact = store.put_bytes(b"reading 0.000 g/210L", content_type="text/plain")
    blob = store.root / artifact.key
    os.chmod(blob, 0o644)
    blob.write_bytes(b"reading 0.000 g/210L".replace(b"0.000", b"0.001"))

    with pytest.raises(IntegrityError):
        store.get_bytes(artifact.key)
    with pytest.raises(IntegrityError):
        store.open_verified(artifact.key)


def test_missing_content_file_is_an_integrity_failure(store: LocalEvidenceStore) -> None:
    artifact = store.put_bytes(b"frame")
    (store.root / artifact.key).unlink()
    with pytest.raises(IntegrityError):
        store.get_bytes(artifact.key)


def test_same_content_is_stored_once(store: LocalEvidenceStore, clock: FakeClock) -> None:
    first = store.put_bytes(b"same bytes", metadata={"session-id": "a"})
    clock.now += timedelta(days=1)
    second = store.put_bytes(b"same bytes", metadata={"session-id": "b"})

    assert second == first  # the first write (and its retention) stands
    assert list(store.keys()) == [first.key]
    files = [p for p in (store.root / "sha256").rglob("*") if p.is_file()]
    assert len(files) == 2  # one content file, one sidecar


def test_delete_is_refused_while_retained(store: LocalEvidenceStore, clock: FakeClock) -> None:
    artifact = store.put_bytes(b"evidence")
    with pytest.raises(ObjectLocked):
        store.delete(artifact.key)
    assert store.get_bytes(artifact.key) == b"evidence"

    clock.now += timedelta(days=RETENTION_DAYS, seconds=1)
    store.delete(artifact.key)
    with pytest.raises(NotFound):
        store.stat(artifact.key)
    with pytest.raises(NotFound):
        store.get_bytes(artifact.key)


def test_legal_hold_outlasts_retention(store: LocalEvidenceStore, clock: FakeClock) -> None:
    artifact = store.put_bytes(b"disputed photo")
    store.set_legal_hold(artifact.key, True)
    assert store.stat(artifact.key).legal_hold

    clock.now += timedelta(days=RETENTION_DAYS + 1)
    with pytest.raises(ObjectLocked):
        store.delete(artifact.key)

    store.set_legal_hold(artifact.key, False)
    assert not store.stat(artifact.key).legal_hold
    store.delete(artifact.key)
    assert list(store.keys()) == []


def test_retention_date_is_recorded(store: LocalEvidenceStore, clock: FakeClock) -> None:
    artifact = store.put_bytes(b"x")
    assert store.retention(artifact.key) == clock.now + timedelta(days=RETENTION_DAYS)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "sha256/00/" + "a" * 64,  # prefix does not match the digest
        "sha256/aa/" + "a" * 63,
        "sha256/aa/" + "A" * 64,
        "sha256/aa/../" + "a" * 64,
    ],
)
def test_only_content_addresses_are_keys(store: LocalEvidenceStore, key: str) -> None:
    with pytest.raises(NotFound):
        store.get_bytes(key)


@pytest.mark.parametrize(
    "metadata",
    [
        {"Session": "x"},
        {"sha256": "0" * 64},
        {"note": "кириллица"},
        {"note": "line\nbreak"},
        {"k": "v" * 2048},
    ],
)
def test_metadata_must_fit_s3_headers(store: LocalEvidenceStore, metadata: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(b"x", metadata=metadata)
    assert list(store.keys()) == []


def test_local_store_has_no_presigned_urls_and_no_spool(store: LocalEvidenceStore) -> None:
    artifact = store.put_bytes(b"x")
    assert store.presign_get(artifact.key) is None
    assert store.flush_spool() == 0
    assert store.healthy()


def test_build_store_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUZET_S3__ENDPOINT", raising=False)  # set after `eval "$(scripts/s3-server env)"`
    local = build_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalEvidenceStore)
    assert isinstance(local, EvidenceStore)
    assert local.root == tmp_path / "evidence"

    from media_server.evidence.s3 import S3EvidenceStore

    remote = build_store(Settings(data_dir=tmp_path, s3=S3Settings(endpoint="127.0.0.1:1")))
    assert isinstance(remote, S3EvidenceStore)
    assert isinstance(remote, EvidenceStore)
    assert remote.spool.root == tmp_path / "spool"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T01:09:04.862000000Z", datetime(2026, 11, 27, 1, 9, 4, 862000, tzinfo=UTC)),  # Ceph
        ("2026-11-27T01:09:04.862Z", datetime(2026, 11, 27, 1, 9, 4, 862000, tzinfo=UTC)),  # MinIO, AWS
        ("2026-11-27T01:09:04Z", datetime(2026, 11, 27, 1, 9, 4, tzinfo=UTC)),
        ("2026-11-27T06:09:04.5+05:00", datetime(2026, 11, 27, 1, 9, 4, 500000, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 01:09:04 GMT", datetime(2026, 11, 27, 1, 9, 4, tzinfo=UTC)),
    ],
)
def test_retention_dates_parse_tolerantly(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_upload_reader_refuses_to_finish_wrong_content() -> None:
    data = b"x" * 10_000
    good = HashingReader(io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data))
    assert b"".join(iter(lambda: good.read(4096), b"")) == data

    bad = HashingReader(io.BytesIO(data), "0" * 64, len(data))
    assert len(bad.read(4096)) == 4096  # earlier parts go through ...
    bad.read(4096)
    with pytest.raises(IntegrityError):
        bad.read(4096)  # ... but the last one never does
