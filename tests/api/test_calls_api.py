"""Issue 17 item 1 through the real app on both profiles: the officer's live call (link, WHIP publish, WHEP
viewers, ending with a decision, audit), watching a check-in, roles and bad input; and item 2's page
positions (the check-in or call page reports the phone's position with its link as the bearer).

The two-way media path itself (two browsers through the media server) is tests/e2e/test_call_chromium.py.
SDP offers here are real aiortc offers.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from media_server.db.enums import Role, SessionKind, SessionStatus
from media_server.db.models import AuditEntry, CheckSession, Position
from media_server.db.types import utcnow
from tests.api.conftest import Api
from tests.support.webrtc import offer_sdp

SDP = {"Content-Type": "application/sdp"}


def _person(api: Api, officer: dict[str, str], ref: str) -> str:
    r = api.client.post(
        "/api/v1/persons", headers=officer, json={"external_ref": ref, "display_name": "Call Person"}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _call(api: Api, officer: dict[str, str], person_id: str) -> dict[str, Any]:
    r = api.client.post(f"/api/v1/persons/{person_id}/calls", headers=officer)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _actions(api: Api, subject_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    with api.services.sessions() as db:
        rows = db.scalars(
            select(AuditEntry).where(AuditEntry.subject_id == subject_id).order_by(AuditEntry.id)
        ).all()
        return [(r.actor, r.action, dict(r.details or {})) for r in rows]


def test_call_link_officer_media_and_ending_unjoined_call(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    person_id = _person(api, officer, "CALL-1")
    call = _call(api, officer, person_id)
    call_id, token = call["call_id"], call["token"]
    assert call["url"] == f"/call/{token}" and call["officer_page"] == f"/ws/calls/{call_id}"
    with api.services.sessions() as db:
        row = db.get(CheckSession, call_id)
        assert row is not None and row.kind is SessionKind.CALL and row.status is SessionStatus.SCHEDULED
        assert row.token_hash is not None and token not in row.token_hash
    assert ("user:officer", "call.started") in [(a, b) for a, b, _ in _actions(api, call_id)]

    # The person's page: the check-in page in call mode, which watches the officer through WHEP.
    page = api.client.get(call["url"])
    assert page.status_code == 200
    assert '"call": true' in page.text and '"whepUrl": "/call/whep"' in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"

    # The officer publishes (WHIP) and watches the person (WHEP) before the person joined.
    r = api.client.post(
        f"/api/v1/calls/{call_id}/whip", content=offer_sdp("sendonly"), headers={**officer, **SDP}
    )
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/sdp") and "a=sendonly" not in r.text
    assert r.headers["Location"].startswith(f"/api/v1/calls/{call_id}/whip/")
    second = api.client.post(
        f"/api/v1/calls/{call_id}/whip", content=offer_sdp("sendonly"), headers={**officer, **SDP}
    )
    assert second.status_code == 409  # one publish per call
    # Stopping the publish (nothing was sent: nothing to store) lets the officer publish again.
    stop = api.client.delete(r.headers["Location"], headers=officer)
    assert stop.status_code == 200 and stop.json()["officer_recording_artifact"] is None
    assert api.client.delete(r.headers["Location"], headers=officer).status_code == 404
    r = api.client.post(
        f"/api/v1/calls/{call_id}/whip", content=offer_sdp("sendonly"), headers={**officer, **SDP}
    )
    assert r.status_code == 201, r.text
    v = api.client.post(
        f"/api/v1/calls/{call_id}/whep", content=offer_sdp("recvonly"), headers={**officer, **SDP}
    )
    assert v.status_code == 201, v.text
    assert "a=sendonly" in v.text  # the answer only sends: the viewer feeds nothing back
    viewer = v.headers["Location"]
    assert viewer.startswith("/api/v1/whep/")
    # Only the viewer's owner ends it.
    assert api.client.delete(viewer, headers=api.as_(Role.ADMIN)).status_code == 403
    assert api.client.delete(viewer, headers=officer).status_code == 200
    assert api.client.delete(viewer, headers=officer).status_code == 404

    state = api.client.get(f"/api/v1/calls/{call_id}", headers=officer)
    assert state.status_code == 200, state.text
    body = state.json()
    assert body["call"]["status"] == "scheduled" and body["person_connected"] is False
    assert body["officer_publishing"] is True and body["checks"] == [] and body["verdict"] is None

    # The person never joined: ending cancels the call (no missed-check violation), audited.
    end = api.client.post(
        f"/api/v1/calls/{call_id}/end",
        headers=officer,
        json={"decision": "review", "comment": "did not answer"},
    )
    assert end.status_code == 200, end.text
    assert end.json()["joined"] is False and end.json()["review_id"] is None
    with api.services.sessions() as db:
        row = db.get(CheckSession, call_id)
        assert row is not None and row.status is SessionStatus.CANCELLED
    ended = [d for a, action, d in _actions(api, call_id) if action == "call.ended"]
    assert len(ended) == 1 and ended[0]["joined"] is False and ended[0]["decision"] == "review"
    assert len(ended[0]["comment_sha256"]) == 64 and "did not answer" not in str(ended[0])
    watched = [d for _, action, d in _actions(api, call_id) if action == "session.watched"]
    assert len(watched) == 1
    # Ended is ended: a second end, a new publish and the person's link are refused.
    again = api.client.post(
        f"/api/v1/calls/{call_id}/end", headers=officer, json={"decision": "pass", "comment": "again"}
    )
    assert again.status_code == 409
    r = api.client.post(
        f"/api/v1/calls/{call_id}/whip", content=offer_sdp("sendonly"), headers={**officer, **SDP}
    )
    assert r.status_code == 409
    assert api.client.get(call["url"]).status_code == 410
    whip = api.client.post(
        "/whip", content=offer_sdp("sendonly"), headers={**SDP, "Authorization": f"Bearer {token}"}
    )
    assert whip.status_code in (401, 410)


def test_call_errors_are_clear_4xx(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    person_id = _person(api, officer, "CALL-2")
    call = _call(api, officer, person_id)
    call_id, token = call["call_id"], call["token"]
    # Bad SDP: 400 on every media endpoint, wrong media type 415; the person's link is not spent by it.
    for url, headers in (
        (f"/api/v1/calls/{call_id}/whip", officer),
        (f"/api/v1/calls/{call_id}/whep", officer),
        ("/whip", {"Authorization": f"Bearer {token}"}),
    ):
        assert api.client.post(url, content=b"v=0\r\n", headers={**headers, **SDP}).status_code == 400, url
        assert api.client.post(url, content=b"not sdp", headers={**headers, **SDP}).status_code == 400, url
        wrong_type = api.client.post(
            url, content=offer_sdp(), headers={**headers, "Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 415, url
    with api.services.sessions() as db:
        row = db.get(CheckSession, call_id)
        assert row is not None and row.token_used_at is None and row.status is SessionStatus.SCHEDULED
    # The person's WHEP needs a joined call and the call's own link.
    assert api.client.post("/call/whep", content=offer_sdp("recvonly"), headers=SDP).status_code == 401
    not_joined = api.client.post(
        "/call/whep", content=offer_sdp("recvonly"), headers={**SDP, "Authorization": f"Bearer {token}"}
    )
    assert not_joined.status_code == 401
    # Roles: a reviewer, an auditor and a person may not call, watch or end.
    for role in (Role.REVIEWER, Role.AUDITOR, Role.PERSON):
        h = api.as_(role)
        assert api.client.post(f"/api/v1/persons/{person_id}/calls", headers=h).status_code == 403
        assert api.client.get(f"/api/v1/calls/{call_id}", headers=h).status_code == 403
        assert (
            api.client.post(
                f"/api/v1/calls/{call_id}/whep", content=offer_sdp("recvonly"), headers={**h, **SDP}
            ).status_code
            == 403
        )
        ended = api.client.post(
            f"/api/v1/calls/{call_id}/end", headers=h, json={"decision": "pass", "comment": "ok!"}
        )
        assert ended.status_code == 403
    api.client.cookies.clear()  # (a login also sets the workstation cookie)
    assert api.client.post(f"/api/v1/persons/{person_id}/calls").status_code == 401
    # Unknown call or person, and a check-in session is not a call.
    assert api.client.get("/api/v1/calls/no-such-call", headers=officer).status_code == 404
    assert api.client.post("/api/v1/persons/no-such-person/calls", headers=officer).status_code == 404
    checkin = api.client.post(f"/api/v1/persons/{person_id}/checkins", headers=officer, json={})
    assert checkin.status_code == 201
    assert api.client.get(f"/api/v1/calls/{checkin.json()['session_id']}", headers=officer).status_code == 404
    # A call is not a check-in kind nor a schedule kind.
    r = api.client.post(f"/api/v1/persons/{person_id}/checkins", headers=officer, json={"kind": "call"})
    assert r.status_code == 422
    rule = {"type": "daily", "windows": [{"start": "09:00", "end": "10:00"}]}
    r = api.client.post(
        f"/api/v1/persons/{person_id}/schedules", headers=officer, json={"kind": "call", "rule": rule}
    )
    assert r.status_code == 422
    # Watching a check-in that is not in progress on this server.
    watch = api.client.post(
        f"/api/v1/sessions/{checkin.json()['session_id']}/whep",
        content=offer_sdp("recvonly"),
        headers={**officer, **SDP},
    )
    assert watch.status_code == 404
    # The end needs a decision and an explanation.
    for body in (
        {"decision": "pass", "comment": " "},
        {"decision": "maybe", "comment": "fine"},
        {"comment": "x" * 10},
    ):
        assert api.client.post(f"/api/v1/calls/{call_id}/end", headers=officer, json=body).status_code == 422
    # An expired link: its page says so, WHIP refuses it and nothing is spent.
    with api.services.sessions.begin() as db:
        row = db.get(CheckSession, call_id)
        assert row is not None
        row.window_start = utcnow() - timedelta(hours=2)
        row.window_end = utcnow() - timedelta(hours=1)
    assert api.client.get(call["url"]).status_code == 410
    whip = api.client.post(
        "/whip", content=offer_sdp("sendonly"), headers={**SDP, "Authorization": f"Bearer {token}"}
    )
    assert whip.status_code == 401


def test_officer_pages_for_a_call_and_for_watching(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    person_id = _person(api, officer, "CALL-3")
    page = api.client.post(f"/ws/persons/{person_id}/calls", headers=officer)
    assert page.status_code == 200, page.text
    assert 'id="call-url"' in page.text and "/call/" in page.text
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    with api.services.sessions() as db:
        call = db.scalars(
            select(CheckSession).where(
                CheckSession.person_id == person_id, CheckSession.kind == SessionKind.CALL
            )
        ).one()
    again = api.client.get(f"/ws/calls/{call.id}", headers=officer)
    assert again.status_code == 200 and 'id="call-url"' not in again.text  # the link is shown once
    assert api.client.get(f"/ws/calls/{call.id}", headers=api.as_(Role.REVIEWER)).status_code == 403
    assert api.client.get(f"/ws/watch/{call.id}", headers=officer).status_code == 200
    person_page = api.client.get(f"/ws/persons/{person_id}", headers=officer)
    assert 'id="start-call"' in person_page.text


def test_page_positions_join_the_track_and_refuse_bad_links(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    person_id = _person(api, officer, "POS-1")
    link = api.client.post(
        f"/api/v1/persons/{person_id}/checkins", headers=officer, json={"window_minutes": 10}
    )
    token = link.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    now_ms = int(time.time() * 1000)
    fix = {"t_ms": now_ms, "lat": 43.2389, "lon": 76.8897, "accuracy_m": 25.0}
    r = api.client.post(
        "/page/positions", headers=bearer, json={"fixes": [fix, {**fix, "t_ms": now_ms - 5000}]}
    )
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == 2 and r.json()["session_id"] == link.json()["session_id"]
    with api.services.sessions() as db:
        rows = db.scalars(
            select(Position).where(Position.person_id == person_id).order_by(Position.seq)
        ).all()
        assert [round(p.accuracy_m) for p in rows] == [25, 25] and rows[0].source.value == "checkin"
        assert rows[0].t < rows[1].t  # stored in time order
    window = {
        "since": (utcnow() - timedelta(hours=1)).isoformat(),
        "until": (utcnow() + timedelta(hours=1)).isoformat(),
    }
    track = api.client.get(f"/api/v1/persons/{person_id}/positions", headers=officer, params=window)
    assert track.status_code == 200, track.text
    assert [p["accuracy_m"] for p in track.json()["positions"]] == [25.0, 25.0]
    # Bad input: 422 for a malformed fix, 400 for a time outside the session; 401 without a usable link.
    assert (
        api.client.post("/page/positions", headers=bearer, json={"fixes": [{**fix, "lat": 91}]}).status_code
        == 422
    )
    assert api.client.post("/page/positions", headers=bearer, json={"fixes": []}).status_code == 422
    future = {**fix, "t_ms": now_ms + 3_600_000}
    assert api.client.post("/page/positions", headers=bearer, json={"fixes": [future]}).status_code == 400
    too_many = {"fixes": [fix] * (api.settings.location.page_max_fixes + 1)}
    assert api.client.post("/page/positions", headers=bearer, json=too_many).status_code == 400
    assert api.client.post("/page/positions", json={"fixes": [fix]}).status_code == 401
    unknown = {"Authorization": "Bearer not-a-link-token"}
    assert api.client.post("/page/positions", headers=unknown, json={"fixes": [fix]}).status_code == 401
    # A link whose session is long closed reports nothing more.
    with api.services.sessions.begin() as db:
        row = db.get(CheckSession, link.json()["session_id"])
        assert row is not None
        row.status = SessionStatus.MISSED
        row.window_start = utcnow() - timedelta(hours=2)
        row.window_end = utcnow() - timedelta(hours=1)
        row.ended_at = utcnow() - timedelta(hours=1)
    assert api.client.post("/page/positions", headers=bearer, json={"fixes": [fix]}).status_code == 401
