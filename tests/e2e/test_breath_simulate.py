"""A breath station end to end: `kuzet station keygen`, device registration, `kuzet station simulate`.

The service runs in uvicorn (ServerThread) on both profiles: the embedded default (SQLite + local
evidence store, its real worker pool) and production (PostgreSQL + Ceph S3 + a Celery worker). The station key is made by the CLI, registered through the admin API, and the
simulator posts a signed reading with photos over real HTTP: 201 and a verdict stored with its evidence.
Sending a reading with the same nonce again (`--replay-nonce`) is refused with 409.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_service import BOTH_PROFILES, profile_settings
from sqlalchemy import select

from media_server.app import create_app
from media_server.db.enums import ArtifactKind, Role
from media_server.db.models import Artifact, AuditEntry, Verdict
from media_server.settings import Settings
from tests.api.conftest import PASSWORD, Profile
from tests.api.seed import create_staff
from tests.api.test_breath_api import ENROL, GENUINE, LFW, MODELS_DIR, station_photos
from tests.support.webrtc import ServerThread

pytestmark = [pytest.mark.e2e, BOTH_PROFILES]

KUZET = Path(sys.executable).with_name("kuzet")
COMMAND_TIMEOUT_S = 180
SERIAL = "BR-E2E-1"


@pytest.fixture
def server(tmp_path: Path, e2e_profile: Profile) -> Iterator[tuple[ServerThread, object]]:
    settings = Settings(data_dir=tmp_path / "var", models={"dir": MODELS_DIR.resolve()})
    with profile_settings(e2e_profile, settings) as on_profile:
        app = create_app(on_profile)
        with ServerThread(app) as srv:
            create_staff(app.state.services)
            yield srv, app.state.services


def _login(client: httpx.Client, role: Role) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _kuzet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUZET), *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )


def test_keygen_register_simulate_and_replay(server: tuple[ServerThread, object], tmp_path: Path) -> None:
    srv, services = server
    key_file = tmp_path / "station.pem"
    keygen = _kuzet("station", "keygen", "--out", str(key_file))
    assert keygen.returncode == 0, keygen.stderr
    public_key = keygen.stdout.strip()
    assert (key_file.stat().st_mode & 0o777) == 0o600

    with httpx.Client(base_url=srv.url, timeout=COMMAND_TIMEOUT_S) as client:
        officer = _login(client, Role.OFFICER)
        r = client.post(
            "/api/v1/persons",
            json={"external_ref": "E2E-BREATH", "display_name": "E2E Breath"},
            headers=officer,
        )
        assert r.status_code == 201, r.text
        person_id = r.json()["id"]
        files = [("images", (Path(p).name, (LFW / p).read_bytes(), "image/jpeg")) for p in ENROL]
        r = client.post(f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer)
        assert r.status_code == 201 and r.json()["enrolled"], r.text
        r = client.post(
            "/api/v1/devices",
            json={
                "serial": SERIAL,
                "kind": "breathalyzer",
                "person_id": person_id,
                "public_key_b64": public_key,
            },
            headers=_login(client, Role.ADMIN),
        )
        assert r.status_code == 201, r.text

    photo_files = []
    for i, blob in enumerate(station_photos(GENUINE)):
        path = tmp_path / f"photo_{i}.jpg"
        path.write_bytes(blob)
        photo_files.append(str(path))
    common = ["--url", srv.url, "--key", str(key_file), "--serial", SERIAL, "--person", person_id]
    sim = _kuzet("station", "simulate", *common, "--brac", "0.0", "--photos", *photo_files)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    out = json.loads(sim.stdout)
    assert out["decision"] == "pass", out["reasons"]
    session_id = out["session_id"]
    with services.sessions() as db:  # type: ignore[attr-defined]
        verdict = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).one()
        assert verdict.decision.value == "pass"
        kinds = [a.kind for a in db.scalars(select(Artifact).where(Artifact.session_id == session_id))]
        assert kinds.count(ArtifactKind.PHOTO) == 3 and ArtifactKind.READING in kinds
        manifest = next(
            a
            for a in db.scalars(select(Artifact).where(Artifact.session_id == session_id))
            if a.sha256 == verdict.manifest_sha256
        )
        assert manifest.meta["what"] == "verdict_manifest"

    nonce = "5eed" * 8
    # The first use of a nonce is admitted (new photos of another moment: the same files would be reuse).
    first = _kuzet("station", "simulate", *common, "--brac", "0.0", "--replay-nonce", nonce, "--photos",
                   *photo_files[:3])  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "session_id" in json.loads(first.stdout)
    replay = _kuzet(
        "station", "simulate", *common, "--brac", "0.0", "--replay-nonce", nonce, "--photos", *photo_files
    )
    assert replay.returncode == 1, replay.stdout + replay.stderr
    refused = json.loads(replay.stdout)
    assert refused["error"] == "replayed_nonce"
    with services.sessions() as db:  # type: ignore[attr-defined]
        entries = db.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "breath_rejected", AuditEntry.subject_id == refused["session_id"]
            )
        ).all()
        assert entries and entries[0].details["code"] == "replayed_nonce"
