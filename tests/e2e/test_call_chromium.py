"""Issue 17: an officer's page and a person's page, two Chromium contexts, hold a two-way call through the
media server (WHIP in, WHEP out on both sides) at shipped default settings; the officer sees live face results,
ends the call with a decision, and the server has stored both recordings, computed the person's checks and
verdict, recorded the decision as an audited review, and kept the page's position reports.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_service import PASSWORD, enrolment_images, login, seed_staff
from sqlalchemy import select

from media_server.app import create_app
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Role, SessionStatus
from media_server.db.models import (
    Artifact,
    AuditEntry,
    CheckResultRecord,
    CheckSession,
    Position,
    Review,
    Verdict,
)
from media_server.settings import Settings
from tests.support.webrtc import ServerThread

pytestmark = pytest.mark.e2e

ALMATY = {"latitude": 43.2389, "longitude": 76.8897, "accuracy": 25}
VIDEO_PLAYING = (
    "(id) => { const v = document.getElementById(id); return v && v.videoWidth > 0 && v.currentTime > 0; }"
)


def _problems(page: Any, problems: list[str], who: str) -> None:
    page.on("pageerror", lambda exc: problems.append(f"{who} page error: {exc}"))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{who}: {r.status} {r.request.method} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )


def _officer_and_person(client: httpx.Client, ref: str, name: str) -> tuple[dict[str, str], str]:
    """The officer's auth headers and a new person's id, created by that officer."""
    officer = login(client, Role.OFFICER)
    person = client.post("/api/v1/persons", json={"external_ref": ref, "display_name": name}, headers=officer)
    assert person.status_code == 201, person.text
    return officer, str(person.json()["id"])


def test_officer_and_person_hold_a_recorded_two_way_call(browser: Any, tmp_path: Path) -> None:
    # Shipped defaults; only loopback ICE, which a test machine needs (ENVIRONMENT.md).
    settings = Settings(data_dir=tmp_path / "var", media={"loopback_only": True})
    app = create_app(settings)
    problems: list[str] = []
    with ServerThread(app) as server:
        services = app.state.services
        seed_staff(services)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            officer, person_id = _officer_and_person(client, "CALL-E2E", "Call E2E")
            files = [("images", (f"f{i}.png", b, "image/png")) for i, b in enumerate(enrolment_images())]
            enrolled = client.post(
                f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer
            )
            assert enrolled.status_code == 201 and enrolled.json()["enrolled"], enrolled.text

        officer_ctx = browser.new_context(permissions=["camera", "microphone"])
        person_ctx = browser.new_context(
            permissions=["geolocation", "camera", "microphone"], geolocation=ALMATY
        )
        try:
            o = officer_ctx.new_page()
            _problems(o, problems, "officer")
            o.goto(f"{server.url}/ws/login?lang=en")
            o.fill("input[name=username]", "officer")
            o.fill("input[name=password]", PASSWORD)
            o.click("button[type=submit]")
            o.wait_for_url("**/ws/queue?lang=en")
            o.goto(f"{server.url}/ws/persons/{person_id}?lang=en")
            o.click("#start-call")
            link = o.locator("#call-url").inner_text().strip()
            assert "/call/" in link
            o.click("#call-start")
            o.wait_for_selector("#call-status[data-state=live]", timeout=60_000)

            p = person_ctx.new_page()
            _problems(p, problems, "person")
            p.goto(f"{link}?lang=ru")
            p.click("#start")
            # Each side plays the other's video, relayed by the media server.
            o.wait_for_function(VIDEO_PLAYING, arg="remote", timeout=90_000)
            p.wait_for_function(VIDEO_PLAYING, arg="remote", timeout=90_000)
            # The officer's screen shows live face results of the person as they come.
            o.wait_for_selector("#live li[data-face=seen]", timeout=240_000)
            o.wait_for_selector("#live li[data-outcome=pass]", timeout=120_000)
            # The officer talks with the person for a while (three live results, one per
            # calls.live_check_every_s) before deciding: a call of two seconds holds too few frames
            # for the session's face decision (face.session_min_frames), as a real call would.
            o.wait_for_function(
                "() => document.querySelectorAll('#live li[data-outcome=pass]').length >= 3", timeout=120_000
            )

            o.select_option("#call-end select[name=decision]", "pass")
            o.fill("#call-end textarea[name=comment]", "Identity confirmed on the call.")
            o.click("#call-end-button")
            o.wait_for_selector("#end-result[data-state=done]", timeout=300_000)
            o.wait_for_selector("#verdict[data-decision]:not([data-decision=''])", timeout=60_000)
            o.wait_for_selector("#checks tr.check-row[data-kind=face]", timeout=60_000)
            p.wait_for_selector("#status[data-state=done]", timeout=120_000)
        finally:
            officer_ctx.close()
            person_ctx.close()

        with services.sessions() as db:
            call = db.scalars(select(CheckSession).where(CheckSession.person_id == person_id)).one()
            assert call.kind.value == "call" and call.status is SessionStatus.COMPLETED
            artifacts = db.scalars(select(Artifact).where(Artifact.session_id == call.id)).all()
            recordings = [a for a in artifacts if a.kind is ArtifactKind.RECORDING]
            checks = {
                c.kind.value: c
                for c in db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == call.id))
            }
            verdict = db.scalars(select(Verdict).where(Verdict.session_id == call.id)).one()
            review = db.scalars(select(Review).where(Review.session_id == call.id)).one()
            actions = [
                e.action for e in db.scalars(select(AuditEntry).where(AuditEntry.subject_id == call.id))
            ]
            fixes = db.scalars(select(Position).where(Position.person_id == person_id)).all()
            assert audit.verify_chain(db).ok
        # Both directions are stored as evidence under their SHA-256.
        assert len(recordings) == 2, [a.meta for a in recordings]
        assert sorted(a.meta.get("side", "person") for a in recordings) == ["officer", "person"]
        for a in artifacts:
            assert hashlib.sha256(services.store.get_bytes(a.key)).hexdigest() == a.sha256
        assert all(a.size > 10_000 for a in recordings)
        # The person's checks ran on the call as on a check-in: the enrolled face is recognised.
        assert {"face", "pad", "location"} <= set(checks)
        assert checks["face"].outcome.value == "pass", checks["face"].message
        assert verdict.manifest_sha256 and verdict.decision.value in ("pass", "fail", "review")
        # The officer's decision is a review of that verdict, audited.
        assert review.decision.value == "pass" and review.verdict_id == verdict.id
        assert {
            "call.started",
            "call.officer_publish",
            "session.watched",
            "review_decided",
            "call.ended",
        } <= set(actions)
        # The person's page reported its position while open.
        assert fixes and all(f.source.value == "checkin" for f in fixes)
        assert any(abs(f.lat - ALMATY["latitude"]) < 1e-6 for f in fixes)
    assert problems == [], problems


def test_officer_watches_a_checkin_in_progress(browser: Any, tmp_path: Path) -> None:
    """Read-only WHEP: the officer sees the person's check-in live; the person's check-in runs as usual."""
    settings = Settings(data_dir=tmp_path / "var", media={"loopback_only": True})
    app = create_app(settings)
    problems: list[str] = []
    with ServerThread(app) as server:
        services = app.state.services
        seed_staff(services)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            officer, person_id = _officer_and_person(client, "WATCH-E2E", "Watch E2E")
            link = client.post(
                f"/api/v1/persons/{person_id}/checkins", json={"window_minutes": 10}, headers=officer
            )
            session_id, url = link.json()["session_id"], link.json()["url"]

        officer_ctx = browser.new_context()
        person_ctx = browser.new_context(
            permissions=["geolocation", "camera", "microphone"], geolocation=ALMATY
        )
        try:
            p = person_ctx.new_page()
            _problems(p, problems, "person")
            p.goto(f"{server.url}{url}?lang=kk")
            p.click("#start")
            p.wait_for_selector("#status[data-state=live]", timeout=60_000)

            o = officer_ctx.new_page()
            _problems(o, problems, "officer")
            o.goto(f"{server.url}/ws/login?lang=en")
            o.fill("input[name=username]", "officer")
            o.fill("input[name=password]", PASSWORD)
            o.click("button[type=submit]")
            o.wait_for_url("**/ws/queue?lang=en")
            o.goto(f"{server.url}/ws/persons/{person_id}?lang=en")
            o.click(f"a.watch[href^='/ws/watch/{session_id}']")
            o.click("#call-start")
            o.wait_for_function(VIDEO_PLAYING, arg="remote", timeout=90_000)
            # The check-in is unaffected: it runs its challenge to the end and gets its outcome.
            p.wait_for_selector("#status[data-state=done]", timeout=240_000)
            # The viewer ends with the session it watched.
            deadline = time.monotonic() + 30
            while app.state.whep_egress.count(session_id) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert app.state.whep_egress.count(session_id) == 0
        finally:
            officer_ctx.close()
            person_ctx.close()

        with services.sessions() as db:
            watched = db.scalars(
                select(AuditEntry).where(
                    AuditEntry.subject_id == session_id, AuditEntry.action == "session.watched"
                )
            ).all()
            session = db.get(CheckSession, session_id)
            verdict = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).one_or_none()
        assert len(watched) == 1 and watched[0].actor == "user:officer"
        assert session is not None and session.status is SessionStatus.COMPLETED and verdict is not None
    assert problems == [], problems
