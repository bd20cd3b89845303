"""The whole check-in in the real service: enrol, issue a one-time link, Chromium streams a still photo
of the enrolled face, and the real pipeline stores evidence and a verdict.

The fake camera shows a still image, so the liveness challenge cannot be followed: a still photo must
never PASS (issue #6), and it must not be booked as a technical failure either.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from e2e_service import enrolment_images, login, wait_for_verdict
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, Role
from media_server.db.models import Artifact, CheckResultRecord, CheckSession
from tests.support.webrtc import ServerThread

pytestmark = pytest.mark.e2e

ALMATY = {"latitude": 43.2389, "longitude": 76.8897, "accuracy": 25}


def test_still_photo_checkin_is_recorded_judged_and_never_passes(
    browser: Any, live_service: tuple[ServerThread, Any]
) -> None:
    server, services = live_service
    with httpx.Client(base_url=server.url, timeout=120) as client:
        officer = login(client, Role.OFFICER)
        person = client.post(
            "/api/v1/persons", json={"external_ref": "E2E-1", "display_name": "E2E"}, headers=officer
        )
        person_id = person.json()["id"]
        files = [("images", (f"f{i}.png", b, "image/png")) for i, b in enumerate(enrolment_images())]
        enrolled = client.post(f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer)
        assert enrolled.status_code == 201 and enrolled.json()["enrolled"], enrolled.text
        link = client.post(
            f"/api/v1/persons/{person_id}/checkins", json={"window_minutes": 10}, headers=officer
        )
        assert link.status_code == 201
        session_id, url = link.json()["session_id"], link.json()["url"]

    context = browser.new_context(permissions=["geolocation", "camera", "microphone"], geolocation=ALMATY)
    page = context.new_page()
    try:
        page.goto(f"{server.url}{url}?lang=ru")
        page.locator("#start").click()
        page.wait_for_selector("#status[data-state=done]", timeout=180_000)
        outcome_text = page.locator("#outcome").inner_text()
    finally:
        context.close()

    verdict = wait_for_verdict(services, session_id)
    assert outcome_text
    with services.sessions() as db:
        session = db.get(CheckSession, session_id)
        assert session is not None and session.token_used_at is not None
        assert session.location is not None and session.location["status"] == "ok"
        artifacts = db.scalars(select(Artifact).where(Artifact.session_id == session_id)).all()
        checks = {
            c.kind.value: c
            for c in db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == session_id))
        }
        assert audit.verify_chain(db).ok
    kinds = {a.kind for a in artifacts}
    assert {ArtifactKind.RECORDING, ArtifactKind.FRAME, ArtifactKind.AUDIO} <= kinds
    (recording,) = [a for a in artifacts if a.kind is ArtifactKind.RECORDING]
    # the browser's VP8/Opus as received, with no gap on loopback
    assert recording.content_type == "video/webm" and recording.meta["format"] == "webm"
    assert recording.meta["gaps"] == 0 and recording.meta["codecs"] == {"video": "vp8", "audio": "opus"}
    for a in artifacts:  # evidence is in the store under its hash and verifies on read
        assert hashlib.sha256(services.store.get_bytes(a.key)).hexdigest() == a.sha256
    # The enrolled face is recognised; the still photo cannot follow the challenge.
    assert checks["face"].outcome.value == "pass", checks["face"].message
    assert verdict.decision is Decision.FAIL, (
        verdict.reasons
    )  # refused as an attack: it cannot follow the challenge
    assert checks["liveness"].outcome.value == "fail"
    assert verdict.models and verdict.thresholds and len(verdict.manifest_sha256) == 64
    # A second use of the same link is refused.
    with httpx.Client(base_url=server.url) as client:
        r = client.post(
            "/whip",
            content=b"v=0\r\n",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {url.rsplit('/', 1)[1]}"},
        )
        assert r.status_code in (400, 401)
