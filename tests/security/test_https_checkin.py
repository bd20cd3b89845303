"""Item 15: `kuzet serve --certfile --keyfile` serves HTTPS, and a browser opening the check-in page
from a non-localhost host name (kuzet.test, mapped by Chromium's host-resolver rules) gets a secure
context, so the camera starts and the check-in streams over WebRTC. The test certificate is made here
with `cryptography`; Chromium trusts it by its SPKI hash."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from media_server.db.engine import make_engine, make_session_factory
from media_server.db.enums import Role
from media_server.db.models import User
from media_server.tokens import hash_password
from tests.support.webrtc import TestMedia, make_test_media

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
HOST = "kuzet.test"
PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class SelfSignedCert:
    cert: Path
    key: Path
    spki_sha256_b64: str


def make_cert(directory: Path) -> SelfSignedCert:
    """A self-signed P-256 certificate for kuzet.test and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SelfSignedCert(cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str  # https://127.0.0.1:<port>
    port: int
    data_dir: Path
    verify: ssl.SSLContext
    spki: str  # base64 SHA-256 of the certificate's public key, for Chromium


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if not Path(CHROMIUM).exists() or shutil.which("ffmpeg") is None:
        pytest.skip("needs Debian chromium and ffmpeg")
    cert = make_cert(tmp_path)
    port = _free_port()
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KUZET_DATA_DIR": str(data_dir),
        "KUZET_MODELS__DIR": str((REPO / "var" / "models").resolve()),
        "KUZET_MEDIA__LOOPBACK_ONLY": "true",
        "KUZET_LIVENESS__MOTION_WINDOW_S": "1.5",
        "KUZET_LIVENESS__READ_DIGITS_WINDOW_S": "3",
        "KUZET_LIVENESS__LEAD_IN_S": "1",
    }
    command = [sys.executable, "-m", "media_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--certfile", str(cert.cert), "--keyfile", str(cert.key)]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    verify = ssl.create_default_context(cafile=str(cert.cert))
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=verify, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("kuzet serve did not start:\n" + (tmp_path / "serve.log").read_text()[-4000:])
            time.sleep(0.5)
        yield Served(url, port, data_dir, verify, cert.spki_sha256_b64)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    return make_test_media(tmp_path_factory.mktemp("tls-media"), seconds=6.0)


def _officer_link(served: Served) -> str:
    engine = make_engine(f"sqlite:///{served.data_dir / 'kuzet.db'}")
    try:
        with make_session_factory(engine).begin() as db:
            db.add(User(username="officer", password_hash=hash_password(PASSWORD), role=Role.OFFICER))
    finally:
        engine.dispose()
    with httpx.Client(base_url=served.url, verify=served.verify, timeout=60) as client:
        r = client.post("/api/v1/auth/login", json={"username": "officer", "password": PASSWORD})
        assert r.status_code == 200, r.text
        assert "secure" in r.headers["set-cookie"].lower()  # cookies are Secure over HTTPS
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        person = client.post(
            "/api/v1/persons", headers=auth, json={"external_ref": "KZ-TLS-1", "display_name": "TLS Test"}
        )
        assert person.status_code == 201, person.text
        link = client.post(f"/api/v1/persons/{person.json()['id']}/checkins", headers=auth, json={})
        assert link.status_code == 201, link.text
        return str(link.json()["url"])


def test_checkin_page_over_https_from_a_host_name_streams(served: Served, media: TestMedia) -> None:
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import chromium_args

    path = _officer_link(served)
    args = [a for a in chromium_args(media) if not a.startswith("--host-resolver-rules")]
    args += [
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE localhost",
        f"--ignore-certificate-errors-spki-list={served.spki}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = browser.new_context(permissions=["camera", "microphone"], locale="en-US")
            page = context.new_page()
            page.goto(f"https://{HOST}:{served.port}{path}?lang=en")
            assert page.evaluate("window.isSecureContext") is True
            assert page.evaluate("location.hostname") == HOST
            page.locator("#start").click()
            page.wait_for_selector("#status[data-state=live]", timeout=60_000)
            # A prompt arrives over the data channel only after the server received media.
            page.wait_for_function("document.getElementById('prompt').textContent.length > 0", timeout=60_000)
            context.close()
        finally:
            browser.close()
