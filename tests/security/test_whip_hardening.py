"""Items 2, 3, 4: WHIP on the real app (real auth, real database on both profiles, real aiortc).

2. POST /whip authorises before it reads the body and streams it with a cap (413).
3. DELETE /whip/{id} needs the bearer that opened the session (RFC 9725).
4. An offer aiortc refuses does not spend the one-time link and leaves no session active.
"""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlparse

import pytest
from sqlalchemy import select

from media_server.db.enums import SessionKind, SessionStatus
from media_server.db.models import CheckSession
from tests.security.conftest import LiveApi
from tests.security.support import new_checkin, new_station, offers_aiortc_refuses, real_offer

SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def offer() -> str:
    return asyncio.run(real_offer())


def _bearer(token: str) -> dict[str, str]:
    return {**SDP, "Authorization": f"Bearer {token}"}


def _session(api: LiveApi, session_id: str) -> CheckSession:
    with api.services.sessions() as db:
        row = db.get(CheckSession, session_id)
        assert row is not None
        return row


def _raw_request(url: str, head: str, body_chunks: list[bytes], read_timeout_s: float) -> bytes:
    """Send `head` and `body_chunks` over a plain socket, then read what the server answers."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=read_timeout_s) as sock:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed: it stopped reading, as it should
        data = b""
        deadline = time.monotonic() + read_timeout_s
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            data += part
        return data


def test_bogus_credential_is_refused_before_any_body_is_sent(live_api: LiveApi) -> None:
    # Headers announce a chunked body that never comes: the answer must not wait for it.
    head = (
        "POST /whip HTTP/1.1\r\nHost: test\r\nContent-Type: application/sdp\r\n"
        "Authorization: Bearer ck_bogus\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw_request(live_api.url, head, [], read_timeout_s=5)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_chunked_body_over_the_cap_is_413_and_the_link_is_kept(live_api: LiveApi, offer: str) -> None:
    session_id, token = new_checkin(live_api)
    chunk = b"a=x-padding:" + b"y" * 8180 + b"\r\n"
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(4096)]  # 32 MiB
    head = (
        "POST /whip HTTP/1.1\r\nHost: test\r\nContent-Type: application/sdp\r\n"
        f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw_request(live_api.url, head, chunks, read_timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Declared too large up front: 413 as well, without reading.
    limit = live_api.settings.media.max_offer_bytes
    r = live_api.client.post("/whip", content=b"v=0\r\n" + b"x" * limit, headers={**_bearer(token)})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    row = _session(live_api, session_id)
    assert row.token_used_at is None and row.status is SessionStatus.SCHEDULED
    # The link still opens a session.
    ok = live_api.client.post("/whip", content=offer, headers=_bearer(token))
    assert ok.status_code == 201, ok.text
    assert live_api.client.delete(ok.headers["location"], headers=_bearer(token)).status_code == 200


def test_delete_needs_the_bearer_that_opened_the_session(live_api: LiveApi, offer: str) -> None:
    session_id, token = new_checkin(live_api)
    _, other_token = new_checkin(live_api)
    r = live_api.client.post("/whip", content=offer, headers=_bearer(token))
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    assert live_api.client.delete(location).status_code == 401
    assert live_api.client.delete(location, headers={"Authorization": "Bearer ck_made_up"}).status_code == 403
    assert (
        live_api.client.delete(location, headers={"Authorization": f"Bearer {other_token}"}).status_code
        == 403
    )
    assert _session(live_api, session_id).status is SessionStatus.ACTIVE  # still live
    assert live_api.client.delete(location, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert live_api.client.delete("/whip/nonexistent", headers=_bearer(token)).status_code == 404


def test_offer_refused_by_aiortc_keeps_the_link_and_no_session_active(live_api: LiveApi, offer: str) -> None:
    session_id, token = new_checkin(live_api)
    for name, bad in offers_aiortc_refuses(offer).items():
        r = live_api.client.post("/whip", content=bad, headers=_bearer(token))
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert r.json()["error"] == "bad_input"
        row = _session(live_api, session_id)
        assert row.token_used_at is None, name
        assert row.status is SessionStatus.SCHEDULED, name
    ok = live_api.client.post("/whip", content=offer, headers=_bearer(token))
    assert ok.status_code == 201, ok.text
    assert live_api.client.delete(ok.headers["location"], headers=_bearer(token)).status_code == 200


def test_station_offer_refused_by_aiortc_leaves_no_active_session(live_api: LiveApi, offer: str) -> None:
    person_id, device_key = new_station(live_api)
    bad = offers_aiortc_refuses(offer)["duplicate-mids"]
    r = live_api.client.post("/whip", content=bad, headers=_bearer(device_key))
    assert r.status_code == 400, r.text
    with live_api.services.sessions() as db:
        rows = db.scalars(
            select(CheckSession).where(
                CheckSession.person_id == person_id, CheckSession.kind == SessionKind.STATION
            )
        ).all()
    assert [row.status for row in rows] == [SessionStatus.TECHNICAL_FAILURE]
