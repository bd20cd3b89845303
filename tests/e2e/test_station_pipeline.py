"""An AV station's check-in through the real service (issue #5): `kuzet station run` with a device key.

An admin registers an AV station for an enrolled person; the station command publishes a face video
and speech over WHIP with its device key; the server opens a station session, and the real pipeline
stores the evidence, runs the checks and writes a verdict. A wrong key is refused with 401. Both
profiles: the embedded default and production (PostgreSQL + Ceph S3 + analysis on a Celery worker).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_service import BOTH_PROFILES, enrolment_images, login, wait_for_verdict
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import ArtifactKind, Role, SessionKind
from media_server.db.models import Artifact, CheckResultRecord, CheckSession, Device
from tests.support.webrtc import ServerThread, TestMedia

pytestmark = [pytest.mark.e2e, BOTH_PROFILES]

STATION_LAT, STATION_LON = 43.2389, 76.8897
KUZET = Path(sys.executable).with_name("kuzet")
COMMAND_TIMEOUT_S = 180


def station_run(url: str, device_key: str, media: TestMedia) -> subprocess.CompletedProcess[str]:
    """`kuzet station run` as a station would run it (loopback-only ICE, as on this test machine)."""
    if not KUZET.exists():
        pytest.skip(f"{KUZET} is not installed (pip install -e .)")
    env = {**os.environ, "KUZET_MEDIA__LOOPBACK_ONLY": "true"}
    return subprocess.run(
        [
            str(KUZET), "station", "run",
            "--url", url,
            "--device-key", device_key,
            "--video", str(media.video_y4m),
            "--audio", str(media.speech_wav),
            "--lat", str(STATION_LAT), "--lon", str(STATION_LON),
            "--duration", "120",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )  # fmt: skip


def test_station_checkin_is_recorded_judged_and_printed(
    test_media: TestMedia, live_service: tuple[ServerThread, Any]
) -> None:
    server, services = live_service
    with httpx.Client(base_url=server.url, timeout=120) as client:
        admin, officer = login(client, Role.ADMIN), login(client, Role.OFFICER)
        person = client.post(
            "/api/v1/persons", json={"external_ref": "E2E-ST", "display_name": "E2E"}, headers=officer
        )
        assert person.status_code == 201, person.text
        person_id = person.json()["id"]
        files = [("images", (f"f{i}.png", b, "image/png")) for i, b in enumerate(enrolment_images())]
        enrolled = client.post(f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer)
        assert enrolled.status_code == 201 and enrolled.json()["enrolled"], enrolled.text
        device = client.post(
            "/api/v1/devices",
            json={"serial": "AV-E2E-1", "kind": "av_station", "person_id": person_id},
            headers=admin,
        )
        assert device.status_code == 201, device.text
        device_id, device_key = device.json()["id"], device.json()["device_key"]
        assert device_key.startswith("dk_")

    started = time.monotonic()
    done = station_run(server.url, device_key, test_media)
    print(f"station run: {time.monotonic() - started:.1f} s, exit {done.returncode}")
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    print("printed outcome:", printed)

    with services.sessions() as db:
        sessions = db.scalars(select(CheckSession).where(CheckSession.person_id == person_id)).all()
        assert len(sessions) == 1
        session = sessions[0]
        assert session.kind is SessionKind.STATION and session.device_id == device_id
        assert session.token_hash is None  # a station session has no one-time link
        assert session.challenge and session.challenge["steps"]  # the server issued a challenge
        assert session.location is not None and session.location["status"] == "ok"
        assert session.location["lat"] == pytest.approx(STATION_LAT)
        assert db.get(Device, device_id) is not None
    verdict = wait_for_verdict(services, session.id)
    assert printed["type"] == "outcome"
    assert printed["session_id"] == session.id
    assert printed["decision"] == verdict.decision.value

    with services.sessions() as db:
        artifacts = db.scalars(select(Artifact).where(Artifact.session_id == session.id)).all()
        checks = db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == session.id)).all()
        assert audit.verify_chain(db).ok
    kinds = [a.kind for a in artifacts]
    assert {ArtifactKind.RECORDING, ArtifactKind.FRAME, ArtifactKind.AUDIO} <= set(kinds)
    assert kinds.count(ArtifactKind.FRAME) >= 2
    for a in artifacts:  # evidence is in the store under its hash and verifies on read
        assert hashlib.sha256(services.store.get_bytes(a.key)).hexdigest() == a.sha256
    for c in checks:
        print(f"{c.kind.value:14} {c.outcome.value:12} {c.code}")
    print("verdict:", verdict.decision.value, verdict.reasons)
    check_kinds = {c.kind.value for c in checks}
    assert {"face", "pad", "liveness", "location"} <= check_kinds
    assert len(verdict.manifest_sha256) == 64 and verdict.models and verdict.thresholds
    manifest = next(a for a in artifacts if a.meta.get("what") == "verdict_manifest")
    assert hashlib.sha256(services.store.get_bytes(manifest.key)).hexdigest() == verdict.manifest_sha256


def test_station_with_a_wrong_key_is_refused(
    test_media: TestMedia, live_service: tuple[ServerThread, Any]
) -> None:
    server, services = live_service
    done = station_run(server.url, "dk_not-a-registered-station-key", test_media)
    print("stderr:", done.stderr.strip()[-500:])
    assert done.returncode != 0
    assert "401" in done.stderr and "device key" in done.stderr
    assert done.stdout.strip() == ""
    with services.sessions() as db:
        assert db.scalars(select(CheckSession)).first() is None
