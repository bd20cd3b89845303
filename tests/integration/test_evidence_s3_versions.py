"""Issue 15 item 6, against the real Ceph RGW: the service's own credentials cannot hide a locked
artifact behind a delete marker (bucket policy), and where a marker exists anyway (a bucket made
before the policy, a store without policies) reads fall back to the locked version by its id."""

from __future__ import annotations

import io
import json
import os
import secrets

import pytest
from minio.error import S3Error

from media_server.evidence import build_store
from media_server.evidence.s3 import S3EvidenceStore, make_client
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
