"""Helpers for the security tests: people, links, stations and real aiortc offers through the API."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from aiortc import RTCPeerConnection

from media_server.db import audit
from media_server.db.enums import Decision, Role, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Verdict
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


def seed_judged_session(api: Api, decision: Decision) -> str:
    """A completed check-in with a verdict, written and audited as the pipeline does; its id."""
    person_id = new_person(api)
    now = datetime.now(UTC)
    with api.services.sessions.begin() as db:
        session = CheckSession(
            person_id=person_id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.COMPLETED,
            window_start=now - timedelta(minutes=5),
            window_end=now + timedelta(minutes=25),
            started_at=now - timedelta(minutes=2),
            ended_at=now,
        )
        db.add(session)
        db.flush()
        verdict = Verdict(
            session_id=session.id,
            decision=decision,
            reasons=["face: mismatch"] if decision is Decision.FAIL else [],
            policy_version="test",
            thresholds={},
            models={},
            manifest_sha256="ab" * 32,
        )
        db.add(verdict)
        db.flush()
        audit.append(
            db,
            actor="system",
            action="verdict_written",
            subject_type="session",
            subject_id=session.id,
            details={"verdict_id": verdict.id, "decision": decision.value, "manifest_sha256": "ab" * 32},
        )
        return str(session.id)
