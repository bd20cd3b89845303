"""A reviewer decides a flagged session in real headless Chromium against the real app under uvicorn.

The app runs on SQLite and a local evidence directory in a temp dir, seeded through the real database
and store (tests/api/seed.py). Screenshots go to tmp/artifacts/workstation/ (gitignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from media_server.app import create_app
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision
from media_server.db.models import AuditEntry, Review
from tests.api.conftest import PASSWORD
from tests.api.seed import FACE_THRESHOLD, SeededSession, app_settings, create_staff, seed_flagged_checkin
from tests.support.webrtc import ServerThread

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "workstation"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ENVIRONMENT.md: flags that keep Debian's headless Chromium off the network and quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 30_000
COMMENT = "Checked the three frames and the recording by eye: same person, low light raised the distance."


@dataclass
class Running:
    url: str
    services: Any
    seeded: SeededSession


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    app = create_app(app_settings(tmp_path / "var"))
    with ServerThread(app) as server:
        services = app.state.services
        create_staff(services)
        yield Running(server.url, services, seed_flagged_checkin(services))


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile per test
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            locale="en-US",
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def shoot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def _record_failure(problems: list[str], req: Any) -> None:
    """A failed request is a problem, except a media range request the browser cancels itself.

    Chromium aborts (net::ERR_ABORTED) the open request of an <audio>/<video> element once it has
    the metadata it wanted, or when the page navigates away; the server answered it, nothing failed.
    The `response` listener still catches any error status the server gives for the same URL.
    """
    failure = req.failure or ""
    if req.resource_type == "media" and "ERR_ABORTED" in failure:
        return
    problems.append(f"request failed: {req.url} ({failure})")


def _record_error_status(problems: list[str], resp: Any) -> None:
    if resp.status >= 400:
        problems.append(f"HTTP {resp.status}: {resp.url}")


def test_reviewer_decides_a_flagged_session_in_chromium(running: Running, page: Any) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg for the seeded recording")
    seeded = running.seeded
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: _record_failure(problems, req))
    page.on("response", lambda resp: _record_error_status(problems, resp))
    shots: list[Path] = []

    # log in through the form
    page.goto(f"{running.url}/ws/login?lang=en")
    shots.append(shoot(page, "decide-01-login"))
    page.fill("input[name=username]", "reviewer")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/ws/queue?lang=en")

    # the queue lists the flagged session; open it
    row = page.locator("tr.queue-row", has_text=seeded.person_name)
    assert row.count() == 1
    assert "Needs review" in row.inner_text() and "Face match: unsure" in row.inner_text()
    shots.append(shoot(page, "decide-02-queue"))
    row.locator("a.open-session").click()
    page.wait_for_url(f"**/ws/sessions/{seeded.session_id}?lang=en")

    # the evidence: check table with the score in words, threshold and model; the check behind the verdict
    face_row = page.locator('#checks tr[data-code="face/borderline"]')
    assert f"distance 0.412, passes below {FACE_THRESHOLD:.3f}" in face_row.inner_text()
    assert "dlib_resnet_face_v1 1.0" in face_row.inner_text()
    assert face_row.locator("td.inconclusive").count() == 1
    assert page.locator("#checks tr").count() == 4  # header + face, pad, voice
    assert page.locator("#verdict").inner_text().startswith("Needs review")
    assert "Face match" in page.locator("#drivers").inner_text()

    # frames decoded, each with its face box drawn inside the image
    page.wait_for_function(
        "Array.from(document.querySelectorAll('figure.frame img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    frames = page.locator("figure.frame")
    assert frames.count() == len(seeded.artifacts[ArtifactKind.FRAME]) == 3
    assert page.locator(".box.bad").count() == 2  # red: over the threshold; green: a match
    for i in range(3):
        img = frames.nth(i).locator("img").bounding_box()
        box = frames.nth(i).locator(".box").bounding_box()
        assert img is not None and box is not None
        assert img["width"] == pytest.approx(240, abs=1)
        assert img["x"] <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 1
        assert img["y"] <= box["y"] and box["y"] + box["height"] <= img["y"] + img["height"] + 1
        assert 10 < box["width"] < img["width"]

    # the speech and the recording load in the media elements
    page.wait_for_function("document.querySelector('audio').readyState >= 1")
    assert page.evaluate("document.querySelector('audio').duration") > 1.0
    # the recording is VP8/Opus WebM as received, which every Chromium build plays (no H.264 needed)
    assert page.evaluate("document.createElement('video').canPlayType('video/webm; codecs=\"vp8, opus\"')")
    page.wait_for_function("document.querySelector('video').readyState >= 1")
    assert page.evaluate("document.querySelector('video').videoWidth") == 320
    assert page.evaluate("document.querySelector('video').duration") == pytest.approx(3.0, abs=0.5)
    shots.append(shoot(page, "decide-03-evidence"))

    # the form refuses a decision without a comment (required field), then records one
    page.check("input[name=decision][value=pass]")
    page.click("#decide")
    assert page.evaluate("document.querySelector('textarea[name=comment]').validity.valueMissing") is True
    assert page.locator("#flash").count() == 0
    page.fill("textarea[name=comment]", COMMENT)
    page.click("#decide")
    page.wait_for_selector("#flash")
    assert page.locator("#flash").inner_text() == "Decision recorded"
    assert page.get_by_text(COMMENT).count() == 1
    assert page.locator("#decide-form").count() == 0  # decided: the form is gone
    assert "reviewer" in page.locator("#reviews").inner_text()
    shots.append(shoot(page, "decide-04-decided"))

    # the session has left the queue
    page.goto(f"{running.url}/ws/queue?lang=en")
    assert page.locator("tr.queue-row", has_text=seeded.person_name).count() == 0
    assert page.get_by_text("Nothing is waiting for a decision.").count() == 1
    assert problems == []

    for path in shots:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, path

    with running.services.sessions() as db:
        (review,) = db.scalars(select(Review).where(Review.session_id == seeded.session_id)).all()
        assert review.decision is Decision.PASS and review.comment == COMMENT
        assert review.verdict_id == seeded.verdict_id
        rows = db.scalars(select(AuditEntry).where(AuditEntry.actor == "user:reviewer")).all()
        actions = [r.action for r in rows]
        assert actions[0] == "login" and actions.count("review_decided") == 1
        viewed = {
            r.subject_id for r in rows if r.action == "evidence_viewed" and r.subject_type == "artifact"
        }
        shown = set(seeded.artifacts[ArtifactKind.FRAME]) | set(seeded.artifacts[ArtifactKind.AUDIO])
        assert shown <= viewed
        report = audit.verify_chain(db)
        assert report.ok, report.reason
