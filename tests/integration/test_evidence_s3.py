"""The S3 evidence store against a real Ceph RADOS Gateway (scripts/s3-server)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from media_server.evidence import IntegrityError, ObjectLocked, build_store, key_for
from media_server.evidence.port import utcnow
from media_server.evidence.s3 import S3EvidenceStore, make_client
from media_server.settings import S3Settings, Settings

pytestmark = pytest.mark.integration

PHOTO = Path(__file__).parents[2] / ".." / "shared" / "data" / "pad" / "true_002.jpg"
MIB = 1024 * 1024


def _store(settings: Settings) -> S3EvidenceStore:
    store = build_store(settings)
    assert isinstance(store, S3EvidenceStore)
    return store


def _raw(settings: Settings) -> Minio:
    return make_client(settings.s3)


def _unique(label: str) -> bytes:
    # every test stores its own content: the bucket (and content addresses) span the whole session
    return f"{label} {os.urandom(16).hex()}\n".encode()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_round_trip_verifies_the_hash(s3_settings: Settings) -> None:
    store = _store(s3_settings)
    content = PHOTO.read_bytes() + _unique("photo")
    digest = hashlib.sha256(content).hexdigest()

    artifact = store.put_bytes(
        content, content_type="image/jpeg", metadata={"session-id": "s-42", "kind": "face"}
    )

    assert artifact.key == key_for(digest) and artifact.sha256 == digest
    assert not artifact.spooled and artifact.version_id
    assert store.get_bytes(artifact.key) == content
    with store.open_verified(artifact.key) as verified:
        assert verified.read() == content
    stat = store.stat(artifact.key)
    assert (stat.size, stat.content_type, stat.version_id) == (
        len(content),
        "image/jpeg",
        artifact.version_id,
    )
    assert dict(stat.metadata) == {"session-id": "s-42", "kind": "face"}
    head = _raw(s3_settings).stat_object(s3_settings.s3.bucket, artifact.key)
    assert head.metadata["x-amz-meta-sha256"] == digest
    assert head.metadata["x-amz-object-lock-mode"] == "COMPLIANCE"

    again = store.put_bytes(content, content_type="image/jpeg")
    assert again.version_id == artifact.version_id  # same content: no second version


def test_tampered_object_is_refused_on_read(s3_settings: Settings) -> None:
    store = _store(s3_settings)
    assert store.healthy()  # creates the bucket
    genuine = _unique("genuine")
    digest = hashlib.sha256(genuine).hexdigest()
    forged = genuine.replace(b"genuine", b"forged!")
    # someone with bucket access writes other bytes under the content address, metadata and all
    _raw(s3_settings).put_object(
        s3_settings.s3.bucket, key_for(digest), io.BytesIO(forged), len(forged), metadata={"sha256": digest}
    )

    with pytest.raises(IntegrityError):
        store.get_bytes(key_for(digest))
    with pytest.raises(IntegrityError):
        store.open_verified(key_for(digest))


def test_large_file_goes_up_in_parts(s3_settings: Settings, tmp_path: Path) -> None:
    store = _store(s3_settings)
    content = os.urandom(11 * MIB)
    path = tmp_path / "session.webm"
    path.write_bytes(content)

    artifact = store.put_file(path, content_type="video/webm", metadata={"session-id": "s-7"})

    assert artifact.size == 11 * MIB and artifact.sha256 == hashlib.sha256(content).hexdigest()
    head = _raw(s3_settings).stat_object(s3_settings.s3.bucket, artifact.key)
    assert head.etag.endswith("-3")  # a multipart ETag names its part count: 5 + 5 + 1 MiB
    assert head.metadata["x-amz-meta-sha256"] == artifact.sha256
    assert store.get_bytes(artifact.key) == content


def test_compliance_locked_version_cannot_be_deleted(s3_settings: Settings) -> None:
    store = _store(s3_settings)
    before = utcnow()
    artifact = store.put_bytes(_unique("locked"))
    expected_until = before + timedelta(days=s3_settings.evidence.retention_days)

    with pytest.raises(ObjectLocked):
        store.delete(artifact.key)
    raw = _raw(s3_settings)
    with pytest.raises(S3Error) as refused:
        raw.remove_object(s3_settings.s3.bucket, artifact.key, version_id=artifact.version_id)
    assert refused.value.code in ("AccessDenied", "InvalidRequest")

    # still there, same version, and no delete marker hides it
    assert store.stat(artifact.key).version_id == artifact.version_id
    versions = list(raw.list_objects(s3_settings.s3.bucket, prefix=artifact.key, include_version=True))
    assert [(v.version_id, v.is_delete_marker) for v in versions] == [(artifact.version_id, False)]
    retain_until = store.retention(artifact.key)
    assert retain_until is not None and artifact.retain_until is not None
    assert abs(retain_until - artifact.retain_until) < timedelta(milliseconds=1)
    assert abs(retain_until - expected_until) < timedelta(minutes=1)


def test_legal_hold(s3_settings: Settings) -> None:
    store = _store(s3_settings)
    artifact = store.put_bytes(_unique("held"))
    raw = _raw(s3_settings)

    store.set_legal_hold(artifact.key, True)
    assert store.stat(artifact.key).legal_hold
    assert raw.is_object_legal_hold_enabled(s3_settings.s3.bucket, artifact.key, artifact.version_id)

    store.set_legal_hold(artifact.key, False)
    assert not store.stat(artifact.key).legal_hold
    assert not raw.is_object_legal_hold_enabled(s3_settings.s3.bucket, artifact.key, artifact.version_id)


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def test_presigned_url_works_and_a_tampered_one_is_refused(s3_settings: Settings) -> None:
    store = _store(s3_settings)
    content = _unique("presigned")
    artifact = store.put_bytes(content, content_type="text/plain")

    url = store.presign_get(artifact.key, 60)
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["60"]
    ok = httpx.get(url, timeout=10)
    assert ok.status_code == 200 and ok.content == content

    parts = urlsplit(url)
    bad_signature = urlunsplit(parts._replace(query=_flip(parts.query)))  # the signature is the last field
    assert (
        parse_qs(urlsplit(bad_signature).query)["X-Amz-Signature"] != parse_qs(parts.query)["X-Amz-Signature"]
    )
    assert httpx.get(bad_signature, timeout=10).status_code == 403
    other_key = urlunsplit(parts._replace(path=_flip(parts.path)))
    assert httpx.get(other_key, timeout=10).status_code == 403


def test_an_outage_during_writes_loses_nothing(s3_settings: Settings, tmp_path: Path) -> None:
    down_s3 = s3_settings.s3.model_copy(update={"endpoint": f"127.0.0.1:{_closed_port()}", "timeout_s": 1.0})
    assert isinstance(down_s3, S3Settings)
    down = _store(s3_settings.model_copy(update={"s3": down_s3}))
    small = _unique("spooled reading")
    big = os.urandom(6 * MIB)
    path = tmp_path / "clip.bin"
    path.write_bytes(big)

    spooled = down.put_bytes(small, content_type="text/plain", metadata={"session-id": "s-9"})
    spooled_file = down.put_file(path)

    assert spooled.spooled and spooled_file.spooled
    assert spooled.key == key_for(hashlib.sha256(small).hexdigest())
    assert spooled_file.key == key_for(hashlib.sha256(big).hexdigest())
    assert down.get_bytes(spooled.key) == small
    assert down.get_bytes(spooled_file.key) == big
    assert down.stat(spooled.key).spooled
    assert down.presign_get(spooled.key) is None  # the API serves spooled bytes itself
    with pytest.raises(ObjectLocked):
        down.delete(spooled.key)
    down.set_legal_hold(spooled.key, True)
    assert not down.healthy()
    assert down.flush_spool() == 0  # still down: nothing leaves the spool
    assert sorted(down.spool.keys()) == sorted([spooled.key, spooled_file.key])

    live = _store(s3_settings)  # same data_dir, so the same spool
    assert live.get_bytes(spooled.key) == small  # served from the spool before the flush
    assert live.flush_spool() == 2
    assert list(live.spool.keys()) == []
    assert live.flush_spool() == 0

    uploaded = live.stat(spooled.key)
    assert not uploaded.spooled and uploaded.version_id
    assert uploaded.legal_hold  # the hold placed while spooled was applied on upload
    assert dict(uploaded.metadata) == {"session-id": "s-9"}
    assert spooled.retain_until is not None and uploaded.retain_until is not None
    assert abs(uploaded.retain_until - spooled.retain_until) < timedelta(milliseconds=1)
    assert live.get_bytes(spooled.key) == small
    assert live.get_bytes(spooled_file.key) == big
    head = _raw(s3_settings).stat_object(s3_settings.s3.bucket, spooled_file.key)
    assert head.etag.endswith("-2")  # 6 MiB flushed in 5 MiB parts
    live.set_legal_hold(spooled.key, False)


def test_flush_after_a_lost_reply_keeps_one_version(s3_settings: Settings) -> None:
    """An artifact that reached S3 but was also spooled (reply lost, crash) is verified, not re-sent."""
    down_s3 = s3_settings.s3.model_copy(update={"endpoint": f"127.0.0.1:{_closed_port()}", "timeout_s": 1.0})
    down = _store(s3_settings.model_copy(update={"s3": down_s3}))
    content = _unique("twice")
    spooled = down.put_bytes(content)
    live = _store(s3_settings)
    uploaded = live.put_bytes(content)
    assert not uploaded.spooled

    assert live.flush_spool() == 1
    versions = list(
        _raw(s3_settings).list_objects(s3_settings.s3.bucket, prefix=spooled.key, include_version=True)
    )
    assert [v.version_id for v in versions] == [uploaded.version_id]
    assert live.get_bytes(spooled.key) == content


def test_puts_spool_directly_while_the_server_is_known_down(s3_settings: Settings) -> None:
    """After one failed attempt puts skip S3 for spool_retry_s, so each one costs no timeout."""
    accepted: list[int] = []
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.05)

        def hang_up() -> None:  # a broken server: accepts, then closes without answering
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(1)  # counted before the close that fails the client's request
                conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            broken_s3 = s3_settings.s3.model_copy(
                update={"endpoint": f"127.0.0.1:{listener.getsockname()[1]}", "timeout_s": 2.0}
            )
            evidence = s3_settings.evidence.model_copy(update={"spool_retry_s": 600.0})
            store = _store(s3_settings.model_copy(update={"s3": broken_s3, "evidence": evidence}))

            first = store.put_bytes(_unique("first"))
            tried = len(accepted)
            second = store.put_bytes(_unique("second"))
            assert first.spooled and second.spooled
            assert tried >= 1
            assert len(accepted) == tried  # the second put did not touch the network
            assert store.flush_spool() == 0  # a flush always probes the server
            assert len(accepted) > tried
            assert sorted(store.spool.keys()) == sorted([first.key, second.key])
        finally:
            stop.set()
            thread.join(timeout=5)
