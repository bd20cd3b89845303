"""Several media nodes: a WHIP session stays on the node its Location names (two real uvicorn servers).

Node a and node b each run the WHIP endpoint (real aiortc answers over 127.0.0.1). A session opened on a
is `/whip/a.<token>`; a GET/PATCH/DELETE that reaches b is proxied to a (or redirected with 307), so
the client ends the session it opened wherever the balancer sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from media_server.settings import Settings
from media_server.webrtc.capture import EndedReason
from media_server.webrtc.credentials import OneTimeTokens
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from tests.support.webrtc import FakeSink, ServerThread, build_whip_app

SDP = "application/sdp"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    url: str
    tokens: OneTimeTokens
    sink: FakeSink


@contextlib.contextmanager
def _cluster(tmp_path: Path, forward: str = "proxy", **extra_peers: str) -> Iterator[dict[str, Node]]:
    ports = {"a": _free_port(), "b": _free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with contextlib.ExitStack() as stack:
        nodes = {}
        for name, port in ports.items():
            settings = Settings(
                data_dir=tmp_path / name,
                media={"loopback_only": True, "no_media_timeout_s": 30},
                node={
                    "id": name,
                    "public_url": urls[name],
                    "peers": {**{n: u for n, u in urls.items() if n != name}, **extra_peers},
                    "forward": forward,
                },
            )
            tokens, sink = OneTimeTokens(), FakeSink()
            server = stack.enter_context(ServerThread(build_whip_app(settings, tokens, sink), port=port))
            nodes[name] = Node(server.url, tokens, sink)
        yield nodes


async def _offer() -> tuple[Any, str]:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video", direction="sendonly")
    pc.createDataChannel("kuzet")
    await gather_loopback(pc)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def _open(node: Node, offer: str) -> tuple[str, dict[str, str]]:
    token = node.tokens.issue()
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{node.url}/whip", content=offer, headers={"Content-Type": SDP, **auth}, timeout=15)
    assert r.status_code == 201, r.text
    return r.headers["location"], auth


async def test_requests_reaching_another_node_are_proxied_to_the_owner(tmp_path: Path) -> None:
    pc, offer = await _offer()
    with _cluster(tmp_path) as nodes:
        a, b = nodes["a"], nodes["b"]
        location, auth = await asyncio.to_thread(_open, a, offer)
        resource = location.rsplit("/", 1)[1]
        assert location == f"{a.url}/whip/{resource}" and resource.startswith("a.")  # names its node
        via_b = f"{b.url}/whip/{resource}"

        state = await asyncio.to_thread(lambda: httpx.get(via_b, headers=auth, timeout=15))
        assert state.status_code == 200 and state.json() == {"state": "live"}, state.text
        assert state.headers["x-kuzet-node"] == "a"
        other = {"Authorization": f"Bearer {b.tokens.issue()}"}
        refused = await asyncio.to_thread(lambda: httpx.delete(via_b, headers=other, timeout=15))
        assert refused.status_code == 403, refused.text  # a's own check: not the bearer that opened it
        patch = await asyncio.to_thread(lambda: httpx.patch(via_b, content=b"a=candidate", timeout=15))
        assert patch.status_code == 405 and patch.headers["allow"] == "GET, DELETE"

        ended = await asyncio.to_thread(lambda: httpx.delete(via_b, headers=auth, timeout=15))
        assert ended.status_code == 200, ended.text
        (seen,) = await asyncio.to_thread(a.sink.wait, 1, 20)
        assert seen.capture.ended_reason is EndedReason.CLIENT_HANGUP
        assert b.sink.captures == []  # the session never moved to b

        # a session id of no known node, or one forwarded once already, is simply not found
        unknown = await asyncio.to_thread(lambda: httpx.get(f"{b.url}/whip/zz.abc", headers=auth))
        assert unknown.status_code == 404
        looped = await asyncio.to_thread(
            lambda: httpx.get(via_b, headers={**auth, "X-Kuzet-Forwarded-By": "c"}, timeout=15)
        )
        assert looped.status_code == 404
    await pc.close()


async def test_redirect_mode_answers_307_to_the_owner(tmp_path: Path) -> None:
    pc, offer = await _offer()
    with _cluster(tmp_path, forward="redirect") as nodes:
        a, b = nodes["a"], nodes["b"]
        location, auth = await asyncio.to_thread(_open, a, offer)
        resource = location.rsplit("/", 1)[1]
        moved = await asyncio.to_thread(lambda: httpx.delete(f"{b.url}/whip/{resource}", headers=auth))
        assert moved.status_code == 307 and moved.headers["location"] == location
        ended = await asyncio.to_thread(lambda: httpx.delete(moved.headers["location"], headers=auth))
        assert ended.status_code == 200
        (seen,) = await asyncio.to_thread(a.sink.wait, 1, 20)
        assert seen.capture.ended_reason is EndedReason.CLIENT_HANGUP
    await pc.close()


async def test_an_owner_that_is_down_is_503_not_a_500(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with _cluster(tmp_path, c=dead) as nodes:
        r = await asyncio.to_thread(
            lambda: httpx.get(f"{nodes['a'].url}/whip/c.token", headers={"Authorization": "Bearer x"})
        )
    assert r.status_code == 503 and r.json()["error"] == "service_unavailable", r.text


def test_single_node_ids_and_node_settings_are_checked(tmp_path: Path) -> None:
    from media_server.webrtc.nodes import foreign_owner, location, new_resource_id

    single = Settings(data_dir=tmp_path).node
    rid = new_resource_id(single)
    assert "." not in rid and location(single, rid) == f"/whip/{rid}" and foreign_owner(single, rid) is None
    named = Settings(data_dir=tmp_path, node={"id": "n1"}).node
    assert new_resource_id(named).startswith("n1.") and location(named, "n1.x") == "/whip/n1.x"
    assert foreign_owner(named, "n2.x") == "n2" and foreign_owner(named, "n1.x") is None
    for bad in (
        {"id": "Node A"},
        {"public_url": "ftp://x"},
        {"public_url": "http://x/path"},
        {"forward": "teleport"},
        {"id": "a", "peers": {"a": "http://x"}},
        {"id": "a", "peers": {"b": "x:80"}},
    ):
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, node=bad)
