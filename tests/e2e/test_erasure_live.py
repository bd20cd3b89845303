"""Erasure on request against a real running server (issue 18): afterwards nothing reaches the person.

An officer enrols a person, an admin registers their AV station and breathalyzer, an officer sends a
check-in link and the person has a session waiting in the review queue. An admin erases the person
through the API. Then, over real HTTP: the check-in link (page and WHIP with a real aiortc offer), the
real `kuzet station run` with the station's key, and a breath test signed with the breathalyzer's real
Ed25519 key - all refused, with nothing new stored: the database rows are counted, and so are the evidence
objects (the local evidence directory; on the production profile the S3 bucket is listed, every object
version). The person is gone from the review queue; each refusal leaves one audit line. Both profiles:
the embedded default and production (PostgreSQL + Ceph S3 + a Celery worker).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_service import BOTH_PROFILES, enrolment_images, login
from sqlalchemy import func, select

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.db import audit
from media_server.db.enums import Role, SessionKind, SessionStatus
from media_server.db.models import (
    Artifact,
    AuditEntry,
    BreathNonce,
    CheckResultRecord,
    CheckSession,
    Enrolment,
    PhotoFingerprint,
    Rejection,
    RejectionArtifact,
    Verdict,
)
from media_server.evidence.s3 import make_client
from media_server.services import Services
from media_server.verdict import write_verdict
from sobriety.simulator import multipart_parts, public_key_b64, sign_reading, simulated_reading
from tests.support.webrtc import ServerThread, TestMedia, offer_sdp

pytestmark = [pytest.mark.e2e, BOTH_PROFILES]

KUZET = Path(sys.executable).with_name("kuzet")
COMMAND_TIMEOUT_S = 180
PHOTO = b"\xff\xd8\xff\xe0 a breath station photo (bytes only; a refused test is never judged)"


def _stored(services: Services) -> dict[str, int]:
    """Everything that could hold something new: rows of every table a check writes, and every object in
    the evidence store (the local directory; on S3 each version of each object in the bucket)."""
    with services.sessions() as db:
        counts = {
            m.__tablename__: int(db.scalar(select(func.count()).select_from(m)) or 0)
            for m in (
                CheckSession,
                Artifact,
                CheckResultRecord,
                Verdict,
                Rejection,
                RejectionArtifact,
                PhotoFingerprint,
                BreathNonce,
                Enrolment,
            )
        }
    settings = services.settings
    counts["local_evidence_files"] = sum(1 for p in settings.evidence_dir.rglob("*") if p.is_file())
    if settings.s3.endpoint:
        client = make_client(settings.s3)
        counts["s3_object_versions"] = sum(
            1 for _ in client.list_objects(settings.s3.bucket, recursive=True, include_version=True)
        )
    return counts


def _flag_for_review(services: Services, person_id: str) -> str:
    """A session of the person whose verdict is REVIEW (a dropped connection), waiting in the queue."""
    now = datetime.now(UTC)
    with services.sessions.begin() as db:
        row = CheckSession(
            person_id=person_id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.TECHNICAL_FAILURE,
            window_start=now - timedelta(hours=1),
            window_end=now,
            meta={},
        )
        db.add(row)
        db.flush()
        session_id = row.id
    dropped = CheckResult(CheckKind.MEDIA, Outcome.TECHNICAL, "connection_failed", "the connection dropped")
    write_verdict(services, session_id, [dropped], [])
    return session_id


def _queue(client: httpx.Client, reviewer: dict[str, str]) -> set[str]:
    r = client.get("/api/v1/reviews/queue", headers=reviewer)
    assert r.status_code == 200, r.text
    return {item["session_id"] for item in r.json()["items"]}


def _station_run(url: str, device_key: str, media: TestMedia) -> subprocess.CompletedProcess[str]:
    """The real station command, as the AV station at the person's home would run it."""
    if not KUZET.exists():
        pytest.skip(f"{KUZET} is not installed (pip install -e .)")
    return subprocess.run(
        [
            str(KUZET), "station", "run",
            "--url", url,
            "--device-key", device_key,
            "--video", str(media.video_y4m),
            "--audio", str(media.speech_wav),
            "--duration", "30",
        ],
        env={**os.environ, "KUZET_MEDIA__LOOPBACK_ONLY": "true"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )  # fmt: skip


def _refusals(services: Services, person_id: str) -> list[dict[str, Any]]:
    with services.sessions() as db:
        rows = db.scalars(
            select(AuditEntry).where(AuditEntry.action == "entry_refused", AuditEntry.subject_id == person_id)
        ).all()
        return [dict(r.details) for r in rows]


def test_an_erased_person_is_refused_at_every_entry_and_nothing_new_is_stored(
    test_media: TestMedia, live_service: tuple[ServerThread, Any]
) -> None:
    server, services = live_service
    breath_key = Ed25519PrivateKey.generate()
    with httpx.Client(base_url=server.url, timeout=120) as client:
        admin, officer = login(client, Role.ADMIN), login(client, Role.OFFICER)
        reviewer = login(client, Role.REVIEWER)
        r = client.post(
            "/api/v1/persons",
            json={"external_ref": "E2E-ERASE", "display_name": "E2E Erase"},
            headers=officer,
        )
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        files = [("images", (f"f{i}.png", b, "image/png")) for i, b in enumerate(enrolment_images())]
        r = client.post(f"/api/v1/persons/{pid}/enrolments/face", files=files, headers=officer)
        assert r.status_code == 201 and r.json()["enrolled"], r.text
        r = client.post(
            "/api/v1/devices",
            json={"serial": "AV-E2E-ERASE", "kind": "av_station", "person_id": pid},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        station_key = r.json()["device_key"]
        r = client.post(
            "/api/v1/devices",
            json={
                "serial": "BR-E2E-ERASE",
                "kind": "breathalyzer",
                "person_id": pid,
                "public_key_b64": public_key_b64(breath_key),
                "calibrated_on": (date.today() - timedelta(days=10)).isoformat(),
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        r = client.post(f"/api/v1/persons/{pid}/checkins", json={}, headers=officer)
        assert r.status_code == 201, r.text
        link = r.json()
        flagged = _flag_for_review(services, pid)
        assert flagged in _queue(client, reviewer)
        assert client.get(link["url"]).status_code == 200  # the page opens while the person is supervised

        r = client.post(f"/api/v1/persons/{pid}/erase", json={"reason": "subject request E2E"}, headers=admin)
        assert r.status_code == 200, r.text
        proof = r.json()
        assert proof["counts"]["templates"] == 1 and proof["counts"]["devices_revoked"] == 2
        assert proof["counts"]["links_revoked"] == 1
        before = _stored(services)
        print("stored after erasure:", before)

        # 1. The check-in link: the page, then WHIP with a real offer.
        page = client.get(link["url"], params={"lang": "en"})
        assert page.status_code == 410 and "Ask your officer" in page.text
        whip = client.post(
            "/whip",
            content=offer_sdp(),
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {link['token']}"},
        )
        assert whip.status_code == 410 and whip.json()["error"] == "person_not_active", whip.text

        # 3. A breath test signed with the breathalyzer's real key.
        reading = simulated_reading(serial="BR-E2E-ERASE", person_id=pid, brac=0.0, unit="g/210L", n_photos=1)
        body, signature = sign_reading(reading, breath_key)
        data, parts = multipart_parts(body, signature, [PHOTO])
        breath = client.post("/api/v1/breath-tests", data=data, files=parts)
        assert breath.status_code == 410 and breath.json()["error"] == "person_not_active", breath.text

    # 2. The AV station at home, still running with its (revoked) key.
    done = _station_run(server.url, station_key, test_media)
    print("station stderr:", done.stderr.strip()[-500:])
    assert done.returncode != 0 and "401" in done.stderr and done.stdout.strip() == ""

    after = _stored(services)
    assert after == before, f"something new was stored after erasure: {before} -> {after}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert flagged not in _queue(client, login(client, Role.REVIEWER))
        check = client.get(
            f"/api/v1/erasures/{proof['erasure_id']}/verify", headers=login(client, Role.ADMIN)
        )
        assert check.status_code == 200 and check.json()["ok"] is True, check.text

    refusals = _refusals(services, pid)
    print("refusals:", refusals)
    entries = sorted(r["entry"] for r in refusals)
    assert {"checkin_page", "whip", "breath"} <= set(entries)
    assert any(r.get("code") == "station_key_revoked" and r["status"] == "erased" for r in refusals)
    with services.sessions() as db:
        assert audit.verify_chain(db).ok
