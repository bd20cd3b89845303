"""Item 13: a used, expired or made-up check-in link says so on the first page, before the person
grants camera, microphone and location (no Start button, no script). Both database profiles."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from media_server.db.models import CheckSession
from media_server.db.types import utcnow
from tests.api.conftest import Api
from tests.security.support import new_checkin, real_offer

CHROMIUM = "/usr/bin/chromium"


def _assert_invalid(html: str, reason: str) -> None:
    assert 'id="invalid-link"' in html and f'data-reason="{reason}"' in html
    assert 'id="start"' not in html and "checkin.js" not in html


def test_valid_link_shows_the_start_page(api: Api) -> None:
    _, token = new_checkin(api)
    r = api.client.get(f"/checkin/{token}?lang=en")
    assert r.status_code == 200 and 'id="start"' in r.text and "invalid-link" not in r.text
    # Opening the page spends nothing: it still works after a reload.
    assert api.client.get(f"/checkin/{token}").status_code == 200


def test_made_up_link_says_so_in_the_persons_language(api: Api) -> None:
    r = api.client.get("/checkin/ck_madeUpLinkThatWasNeverIssued0000000000000")
    assert r.status_code == 404
    _assert_invalid(r.text, "unknown")
    assert "Ссылка недействительна" in r.text and "инспектором" in r.text  # Russian by default
    en = api.client.get("/checkin/ck_madeUpLinkThatWasNeverIssued0000000000000?lang=en")
    assert "Contact your officer for a new link" in en.text
    kk = api.client.get(
        "/checkin/ck_madeUpLinkThatWasNeverIssued0000000000000", headers={"Accept-Language": "kk"}
    )
    assert "инспекторыңызға" in kk.text
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"


def test_used_link_says_it_was_used(api: Api) -> None:
    _, token = new_checkin(api)
    offer = asyncio.run(real_offer())
    auth = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    opened = api.client.post("/whip", content=offer, headers=auth)
    assert opened.status_code == 201, opened.text
    r = api.client.get(f"/checkin/{token}?lang=en")
    assert r.status_code == 410
    _assert_invalid(r.text, "used")
    assert "already used" in r.text
    assert api.client.delete(opened.headers["location"], headers=auth).status_code == 200


def test_expired_link_says_it_expired(api: Api) -> None:
    session_id, token = new_checkin(api)
    past = utcnow() - timedelta(minutes=1)
    with api.services.sessions.begin() as db:
        db.execute(
            update(CheckSession)
            .where(CheckSession.id == session_id)
            .values(window_start=past - timedelta(hours=1), window_end=past)
        )
    r = api.client.get(f"/checkin/{token}?lang=en")
    assert r.status_code == 410
    _assert_invalid(r.text, "expired")
    assert "has expired" in r.text


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["sqlite"], indirect=True)
def test_browser_sees_the_message_without_any_permission_prompt(api: Api) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium")
    from playwright.sync_api import sync_playwright

    from tests.support.webrtc import ServerThread

    # The `api` app's database, served over real HTTP to a real browser.
    with ServerThread(api.client.app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(locale="en-US")  # no permissions granted at all
            page = context.new_page()
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            page.goto(f"{server.url}/checkin/ck_neverIssued0000000000000000000000000000000")
            assert page.locator("#invalid-link").is_visible()
            assert page.locator("#start").count() == 0
            assert "Contact your officer" in page.locator("#what-to-do").inner_text()
            assert not any("checkin.js" in u for u in requested)
        finally:
            browser.close()
