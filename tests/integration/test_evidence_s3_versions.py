"""Issue 15 item 6, against the real Ceph RGW: the service's own credentials cannot hide a locked
artifact behind a delete marker (bucket policy), and reads name a version (the one the artifact row
recorded at write time, else the first written), so neither a marker nor a later version under the
same key changes what an artifact answers."""

from __future__ import annotations

import io
import json
import os
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from minio.error import S3Error

from media_server.artifacts import StoredRef, store_artifact
from media_server.db.enums import ArtifactKind, SessionKind, SessionStatus
from media_server.db.models import Artifact, CheckSession, Person
from media_server.evidence import NotFound, build_store
from media_server.evidence.s3 import S3EvidenceStore, make_client
from media_server.services import build_services
from media_server.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(s3_settings: Settings) -> Settings:
    """Settings naming a bucket of this test alone (policies are per bucket)."""
    return s3_settings.model_copy(
        update={"s3": s3_settings.s3.model_copy(update={"bucket": f"kuzet-v-{secrets.token_hex(4)}"})}
    )


def _store(settings: Settings) -> S3EvidenceStore:
    store = build_store(settings)
    assert isinstance(store, S3EvidenceStore)
    return store


def test_delete_without_version_is_refused_to_the_service_credentials(fresh: Settings) -> None:
    store = _store(fresh)
    data = f"frame {os.urandom(8).hex()}".encode()
    artifact = store.put_bytes(data, content_type="image/jpeg")
    raw = make_client(fresh.s3)  # the very credentials the service runs with
    policy = json.loads(raw.get_bucket_policy(fresh.s3.bucket))
    assert policy["Statement"][0]["Action"] == ["s3:DeleteObject"]
    with pytest.raises(S3Error) as refused:
        raw.remove_object(fresh.s3.bucket, artifact.key)
    assert refused.value.code == "AccessDenied"
    versions = list(raw.list_objects(fresh.s3.bucket, prefix=artifact.key, include_version=True))
    assert [(v.version_id, v.is_delete_marker) for v in versions] == [(artifact.version_id, False)]
    assert store.get_bytes(artifact.key) == data


def test_a_delete_marker_does_not_hide_the_locked_version(fresh: Settings) -> None:
    store = _store(fresh)
    data = f"recording {os.urandom(8).hex()}".encode()
    artifact = store.put_bytes(data, content_type="video/mp4")
    raw = make_client(fresh.s3)
    # A bucket from before the policy (or a store without policies): the marker is accepted.
    raw.delete_bucket_policy(fresh.s3.bucket)
    raw.remove_object(fresh.s3.bucket, artifact.key)
    markers = [
        v.is_delete_marker
        for v in raw.list_objects(fresh.s3.bucket, prefix=artifact.key, include_version=True)
    ]
    assert markers.count(True) == 1
    with pytest.raises(S3Error):
        raw.get_object(fresh.s3.bucket, artifact.key)  # by key alone: 404
    reader = _store(fresh)  # a fresh process: nothing cached
    assert reader.get_bytes(artifact.key) == data
    with reader.open_verified(artifact.key) as copy:
        assert copy.read() == data
    assert reader.stat(artifact.key).version_id == artifact.version_id
    # The next start puts the policy back on a bucket that has none.
    assert _store(fresh).healthy()
    assert json.loads(raw.get_bucket_policy(fresh.s3.bucket))["Statement"][0]["Sid"] == "KuzetNoDeleteMarkers"
    raw.put_object(fresh.s3.bucket, "probe", io.BytesIO(b"x"), 1)
    with pytest.raises(S3Error) as refused:
        raw.remove_object(fresh.s3.bucket, "probe")
    assert refused.value.code == "AccessDenied"


def test_an_artifact_reads_the_version_it_was_written_as(fresh: Settings) -> None:
    """The row keeps the version id S3 returned; a later PUT under the same key and a delete marker on
    top (both with the service's own credentials) change nothing the artifact answers."""
    services = build_services(fresh)  # SQLite under data_dir, the S3 store of `fresh`
    try:
        now = datetime.now(UTC)
        with services.sessions.begin() as db:
            person = Person(external_ref=f"case-{secrets.token_hex(3)}", display_name="Test Person")
            db.add(person)
            db.flush()
            session = CheckSession(
                person_id=person.id,
                kind=SessionKind.CHECKIN,
                status=SessionStatus.ACTIVE,
                window_start=now - timedelta(minutes=5),
                window_end=now + timedelta(minutes=55),
            )
            db.add(session)
            db.flush()
            session_id = session.id
        data = f"frame {os.urandom(8).hex()}".encode()
        ref = store_artifact(
            services, session_id, ArtifactKind.FRAME, "image/jpeg", {"frame_index": 0}, data=data
        )
        raw = make_client(fresh.s3)
        written = [
            v.version_id for v in raw.list_objects(fresh.s3.bucket, prefix=ref.key, include_version=True)
        ]
        assert ref.version_id is not None and written == [ref.version_id]
        with services.sessions() as db:
            row = db.get(Artifact, ref.artifact_id)
            assert row is not None and row.meta["version_id"] == ref.version_id
            assert StoredRef.of(row) == ref

        # Object Lock allows new versions: other bytes under the content address, metadata and all
        forged = data.replace(b"frame", b"forge")
        raw.put_object(
            fresh.s3.bucket, ref.key, io.BytesIO(forged), len(forged), metadata={"sha256": ref.sha256}
        )
        raw.delete_bucket_policy(fresh.s3.bucket)
        raw.remove_object(fresh.s3.bucket, ref.key)  # and a delete marker over both
        with pytest.raises(S3Error):
            raw.get_object(fresh.s3.bucket, ref.key)  # by key alone: 404

        reader = _store(fresh)  # a fresh process: nothing cached
        assert reader.get_bytes(row.key, version_id=row.version_id) == data
        with reader.open_verified(row.key, version_id=row.version_id) as copy:
            assert copy.read() == data
        assert reader.stat(row.key, version_id=row.version_id).version_id == ref.version_id
        # a row without a version (spooled while S3 was down, or older) reads the first version written
        assert reader.get_bytes(row.key) == data
        assert reader.stat(row.key).version_id == ref.version_id
        # storing the same content again names the genuine version, not the later one
        assert reader.put_bytes(data, content_type="image/jpeg").version_id == ref.version_id
        versions = list(raw.list_objects(fresh.s3.bucket, prefix=ref.key, include_version=True))
        assert len(versions) == 3  # marker, forged, genuine: all still there, none answered
    finally:
        services.engine.dispose()


def test_the_version_named_is_the_version_read(fresh: Settings) -> None:
    """A version id that is not there is NotFound, never silently another version."""
    store = _store(fresh)
    data = f"audio {os.urandom(8).hex()}".encode()
    artifact = store.put_bytes(data, content_type="audio/wav")
    with pytest.raises(NotFound):
        store.get_bytes(artifact.key, version_id="no-such-version")
