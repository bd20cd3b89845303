"""Helpers for the security tests: people, links, stations and real aiortc offers through the API."""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiortc import RTCPeerConnection

from media_server.db.enums import Role
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from tests.api.conftest import Api


def new_person(api: Api, headers: dict[str, str] | None = None) -> str:
    """A person under supervision, created by an officer; their id."""
    headers = headers or api.as_(Role.OFFICER)
    r = api.client.post(
        "/api/v1/persons",
        headers=headers,
        json={"external_ref": f"KZ-{secrets.token_hex(4)}", "display_name": "Test Person"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def new_checkin(api: Api, person_id: str | None = None) -> tuple[str, str]:
    """(session id, one-time token) of an on-demand check-in opened now."""
    headers = api.as_(Role.OFFICER)
    person_id = person_id or new_person(api, headers)
    r = api.client.post(f"/api/v1/persons/{person_id}/checkins", headers=headers, json={})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return str(body["session_id"]), str(body["token"])


def new_station(api: Api) -> tuple[str, str]:
    """(person id, device key) of an AV station assigned to a new person."""
    person_id = new_person(api)
    r = api.client.post(
        "/api/v1/devices",
        headers=api.as_(Role.ADMIN),
        json={"serial": f"AV-{secrets.token_hex(4)}", "kind": "av_station", "person_id": person_id},
    )
    assert r.status_code == 201, r.text
    return person_id, str(r.json()["device_key"])


async def real_offer() -> str:
    """A real aiortc offer (video, audio, data channel) with loopback candidates; the peer is closed."""
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    pc.createDataChannel("kuzet")
    await gather_loopback(pc)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def offers_aiortc_refuses(offer: str) -> dict[str, str]:
    """Offers that pass the SDP checks of `validate_offer` but fail inside aiortc's negotiation."""
    return {
        "duplicate-mids": re.sub(r"a=mid:\d+", "a=mid:0", offer),
        "bundle-names-no-section": offer.replace("a=group:BUNDLE", "a=group:BUNDLE 9"),
    }
