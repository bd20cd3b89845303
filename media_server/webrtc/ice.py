"""ICE configuration: configured STUN/TURN servers only (closed networks), and loopback-only gathering."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

LOOPBACK_V4 = "127.0.0.1"


def parse_ice_server(url: str) -> dict[str, str]:
    """`turn:user:secret@host:3478?transport=udp` -> {"urls", "username", "credential"} (the W3C shape)."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise ValueError(f"ICE server {url!r} has no scheme")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return {"urls": url}
    username, _, credential = userinfo.partition(":")
    return {"urls": f"{scheme}:{hostpart}", "username": unquote(username), "credential": unquote(credential)}


def rtc_configuration(ice_servers: list[str]) -> RTCConfiguration:
    """Always explicit: aiortc's default would resolve a public STUN host."""
    servers = []
    for url in ice_servers:
        parsed = parse_ice_server(url)
        servers.append(
            RTCIceServer(
                urls=parsed["urls"], username=parsed.get("username"), credential=parsed.get("credential")
            )
        )
    return RTCConfiguration(iceServers=servers)


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    gatherers = [t.receiver.transport.transport.iceGatherer for t in pc.getTransceivers()]
    if pc.sctp is not None:
        gatherers.append(pc.sctp.transport.transport.iceGatherer)
    seen: dict[int, Any] = {}
    for gatherer in gatherers:
        if gatherer.state == "new":
            seen[id(gatherer)] = gatherer._connection
    return list(seen.values())


async def gather_loopback(pc: RTCPeerConnection) -> None:
    """Gather host candidates on 127.0.0.1 only, for every transport that has not gathered yet.

    aioice's gathering skips 127.0.0.1 and offers every other interface. Here we bind on loopback
    through the connection's own `get_component_candidates` and mark gathering done, so aiortc's
    later `gather()` keeps these candidates. Call after the transports exist (after
    setRemoteDescription on an answerer, after addTrack/createDataChannel on an offerer) and
    before setLocalDescription. Touches aioice 0.13 internals; tests cover it.
    """
    for connection in _ice_connections(pc):
        if connection._local_candidates_start:
            continue
        connection._local_candidates_start = True
        for component in sorted(connection._components):
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=[LOOPBACK_V4]
            )
        connection._local_candidates_end = True
