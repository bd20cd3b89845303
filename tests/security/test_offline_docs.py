"""Item 12: /docs and /redoc load only packaged assets (no CDN), and Swagger UI renders the API in a
browser that cannot resolve any outside host."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.settings import Settings
from tests.support.webrtc import ServerThread

CHROMIUM = "/usr/bin/chromium"
_REF = re.compile(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""")


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", models={"dir": Path("var/models").resolve()})


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    refs = _REF.findall(r.text)
    assert refs and all(ref.startswith("/") for ref in refs), refs
    assert "cdn." not in r.text and "https://" not in r.text
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        if ref.endswith(".js"):
            assert len(asset.content) > 500_000, ref  # the real bundle, not a stub


def test_swagger_ui_is_version_5_which_renders_openapi_3_1(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', bundle)


@pytest.mark.e2e
def test_swagger_ui_renders_on_a_closed_network(app_settings: Settings) -> None:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian chromium")
    from playwright.sync_api import sync_playwright

    with ServerThread(create_app(app_settings)) as server, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                # Nothing outside this machine resolves: a CDN reference would leave the page blank.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(f"{server.url}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=30_000)
            operations = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert operations > 20, operations
    assert "Kuzet" in title
    assert failed == []
