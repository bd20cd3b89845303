"""The workstation pages in real headless Chromium (Debian's) in Russian, Kazakh and English.

One app under uvicorn (SQLite + local evidence directory in a temp dir) seeded through the real database
and store (tests/api/seed_workstation.py); one browser for the module. Each page is loaded in every
language, checked for translated text, broken images and script errors, and saved as a screenshot under
tmp/artifacts/workstation/ (not committed). A click on a challenge step must seek the recording, which
the browser fetches with HTTP Range requests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from media_server.app import create_app
from tests.api.conftest import PASSWORD
from tests.api.seed import SeededSession, app_settings, create_staff
from tests.api.seed_workstation import (
    PROMPTS,
    RECORDING_T0_S,
    SeededEpisode,
    seed_breath_episode,
    seed_challenge_checkin,
    seed_checkin_history,
)
from tests.support.webrtc import ServerThread

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "workstation"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
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
TIMEOUT_MS = 20_000
# Words every page must show in its language (and that the other languages do not show).
EXPECTED = {
    "ru": {
        "queue": ["Очередь на проверку", "Тест на алкоголь", "Нарушение"],
        "checkin": ["Проверка живости", "Поворот головы влево", "проходит от 15 и выше"],
        "breath": ["Эпизод тестов на алкоголь", "Прежнее фото", "Показание алкотестера"],
        "person": ["Решение суда", "Алкоголь в выдохе по времени", "Результаты отметок по дням"],
    },
    "kk": {
        "queue": ["Тексеру кезегі", "Алкогольге тест", "Бұзушылық"],
        "checkin": ["Тірілікті тексеру", "Басты солға бұру", "15 және одан жоғары болса өтеді"],
        "breath": ["Алкогольге тест эпизоды", "Бұрынғы фото", "Алкотестер көрсеткіші"],
        "person": ["Сот шешімі", "Дем алудағы алкоголь уақыт бойынша", "Белгілену нәтижелері күндер бойынша"],
    },
    "en": {
        "queue": ["Review queue", "Breath test", "Violation"],
        "checkin": ["Liveness challenge", "Turn head left", "passes at 15 or above"],
        "breath": ["Breath test episode", "Earlier photo", "Breathalyzer reading"],
        "person": ["Court order", "BrAC over time", "Check-in outcomes by day"],
    },
}


@dataclass
class Running:
    url: str
    checkin: SeededSession
    episode: SeededEpisode


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg for the seeded recording")
    app = create_app(app_settings(tmp_path_factory.mktemp("ws-chromium") / "var"))
    with ServerThread(app) as server:
        services = app.state.services
        create_staff(services)
        checkin = seed_challenge_checkin(services, external_ref="CH-1", display_name="Erlan Challenge")
        episode = seed_breath_episode(services, external_ref="EP-1", display_name="Aigerim Episode")
        seed_checkin_history(services, episode.person_id, days=8)
        yield Running(server.url, checkin, episode)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture(scope="module")
def page(running: Running, browser_page: Any) -> Any:
    """The browser, logged in as the reviewer through the form."""
    browser_page.goto(f"{running.url}/ws/login?lang=en")
    browser_page.fill("input[name=username]", "reviewer")
    browser_page.fill("input[name=password]", PASSWORD)
    browser_page.click("button[type=submit]")
    browser_page.wait_for_url("**/ws/queue?lang=en")
    return browser_page


def shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def _until(page: Any, expression: str, timeout_ms: float = TIMEOUT_MS) -> None:
    """Poll a JavaScript expression from the test side (page.evaluate runs over the DevTools protocol, so
    the workstation's CSP, which forbids eval, stays in force for the page itself)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def _images_loaded(page: Any) -> None:
    _until(page, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


@pytest.mark.parametrize("lang", ["ru", "kk", "en"])
def test_pages_in_each_language(running: Running, page: Any, lang: str) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    urls = {
        "queue": f"/ws/queue?lang={lang}",
        "checkin": f"/ws/sessions/{running.checkin.session_id}?lang={lang}",
        "breath": f"/ws/sessions/{running.episode.confirmatory.session_id}?lang={lang}",
        "person": f"/ws/persons/{running.episode.person_id}?lang={lang}",
    }
    others = [w for other, words in EXPECTED.items() if other != lang for w in words["queue"][:1]]
    for name, path in urls.items():
        response = page.goto(running.url + path)
        assert response is not None and response.status == 200, path
        assert page.locator("html").get_attribute("lang") == lang
        _images_loaded(page)
        text = page.locator("main").inner_text()
        for expected in EXPECTED[lang][name]:
            assert expected in text, (lang, name, expected)
        if name == "queue":
            assert not any(word in text for word in others)
        shot = shoot(page, f"{lang}-{name}")
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    # the person page draws its charts from the data
    assert page.locator("#brac-chart circle.reading").count() == 3
    assert page.locator("#brac-chart line.limit").count() == 1
    assert page.locator("#outcome-chart rect.day").count() >= 8
    assert problems == []


def test_clicking_a_challenge_step_seeks_the_recording(running: Running, page: Any) -> None:
    ranged: list[int] = []
    page.on(
        "response",
        lambda r: (
            ranged.append(r.status) if "/ws/artifacts/" in r.url and r.request.method == "GET" else None
        ),
    )
    page.goto(f"{running.url}/ws/sessions/{running.checkin.session_id}?lang=en")
    # VP8/Opus WebM, as the server records it: every Chromium build plays it
    assert page.evaluate("document.createElement('video').canPlayType('video/webm; codecs=\"vp8, opus\"')")
    _until(page, "document.querySelector('video#recording').readyState >= 1")
    steps = page.locator("#timeline li")
    assert steps.count() == len(PROMPTS)
    for index in (2, 0):
        expected = PROMPTS[index][1] - RECORDING_T0_S
        steps.nth(index).click()
        _until(page, f"Math.abs(document.querySelector('video#recording').currentTime - {expected}) < 0.05")
        assert "current" in (steps.nth(index).get_attribute("class") or "")
    shoot(page, "en-checkin-seeked")
    assert 206 in ranged  # the browser fetched the recording by byte ranges
