"""Location monitoring through the real app (SQLite): signed trackers, the position chain, zones, alerts.

Trackers sign with real Ed25519 keys (tests.support.location). Webhooks are captured by a recording
notifier in place of services.notifier (the same `submit` the flows call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select, update

from media_server.cli import main as cli
from media_server.db.enums import PositionSource, Role
from media_server.db.models import AuditEntry, LocationAlert, Position, SignedBatch
from media_server.location.chain import NewFix, verify_person
from media_server.location.store import erase_location, record_checkin_fixes
from media_server.webhooks import EventType, WebhookEvent
from tests.api.conftest import Api
from tests.support.location import CENTRE, FakeTracker, iso, position

POSITIONS = "/api/v1/positions"
EVENTS = "/api/v1/device-events"
RADIUS_M = 100.0


@dataclass
class RecordingNotifier:
    """Stands in for WebhookNotifier: records what the flows submit."""

    events: list[WebhookEvent] = field(default_factory=list)
    enabled: bool = True

    def submit(self, event: WebhookEvent) -> None:
        self.events.append(event)

    async def aclose(self) -> None:
        return None


@dataclass
class Case:
    person_id: str
    tracker: FakeTracker
    officer: dict[str, str]
    hooks: RecordingNotifier


def _case(api: Api, serial: str = "TRK-1", *, assign: bool = True) -> Case:
    officer = api.as_(Role.OFFICER)
    r = api.client.post(
        "/api/v1/persons", json={"external_ref": f"case-{serial}", "display_name": "P"}, headers=officer
    )
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    tracker = FakeTracker(serial)
    body = {"serial": serial, "kind": "tracker", "public_key_b64": tracker.public_key_b64}
    if assign:
        body["person_id"] = person_id
    r = api.client.post("/api/v1/devices", json=body, headers=api.as_(Role.ADMIN))
    assert r.status_code == 201, r.text
    hooks = RecordingNotifier()
    api.services.notifier = hooks
    return Case(person_id, tracker, officer, hooks)


def _post(api: Api, path: str, body: bytes) -> Any:
    return api.client.post(path, content=body, headers={"Content-Type": "application/json"})


def _exclusion_zone(api: Api, case: Case) -> str:
    r = api.client.post(
        f"/api/v1/persons/{case.person_id}/zones",
        json={
            "kind": "exclusion",
            "label": "victim's address",
            "geometry": {"type": "circle", "lat": CENTRE[0], "lon": CENTRE[1], "radius_m": RADIUS_M},
        },
        headers=case.officer,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _alerts(api: Api, case: Case, **params: str) -> list[dict[str, Any]]:
    r = api.client.get("/api/v1/alerts", params={"person_id": case.person_id, **params}, headers=case.officer)
    assert r.status_code == 200, r.text
    return list(r.json()["alerts"])


def test_a_tracker_needs_a_key_and_an_assigned_person(api: Api) -> None:
    r = api.client.post(
        "/api/v1/devices", json={"serial": "TRK-NOKEY", "kind": "tracker"}, headers=api.as_(Role.ADMIN)
    )
    assert r.status_code == 400
    case = _case(api, "TRK-FREE", assign=False)
    now = datetime.now(UTC)
    r = _post(api, POSITIONS, case.tracker.positions([position(now, 0)], now))
    assert r.status_code == 422
    assert r.json()["error"] == "device_unassigned"


def test_positions_are_stored_as_a_verifiable_hash_chain(api: Api) -> None:
    case = _case(api)
    now = datetime.now(UTC)
    late = [position(now - timedelta(hours=5, seconds=i * 10), 500 + i) for i in range(3)]
    r = _post(api, POSITIONS, case.tracker.positions(late, now))
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == 3 and r.json()["alerts"] == []
    r = _post(api, POSITIONS, case.tracker.positions([position(now - timedelta(seconds=5), 500)], now))
    assert r.status_code == 201, r.text

    with api.services.sessions() as db:
        rows = db.scalars(
            select(Position).where(Position.person_id == case.person_id).order_by(Position.seq)
        ).all()
        assert [p.seq for p in rows] == [1, 2, 3, 4]
        assert rows[1].prev_hash == rows[0].row_hash
        batch = db.get(SignedBatch, rows[0].batch_id)
        assert batch is not None and json.loads(batch.body)["positions"] == late
        report = verify_person(db, case.person_id)
    assert report.ok and report.rows_checked == 4

    runner = CliRunner()
    # the CLI reads the same database as the service under test (SQLite file or PostgreSQL)
    env = {"KUZET_DATA_DIR": str(api.settings.data_dir), "KUZET_DATABASE__URL": api.settings.database.url}
    result = runner.invoke(cli, ["positions", "verify", "--person", case.person_id], env=env)
    assert result.exit_code == 0, result.output
    assert "4 rows checked" in result.output

    with api.services.sessions.begin() as db:
        db.execute(
            update(Position).where(Position.person_id == case.person_id, Position.seq == 2).values(lat=0.0)
        )
    result = runner.invoke(cli, ["positions", "verify", "--person", case.person_id], env=env)
    assert result.exit_code == 1
    assert "BROKEN at seq 2" in result.output

    r = api.client.get(
        f"/api/v1/persons/{case.person_id}/positions",
        params={"since": iso(now - timedelta(days=1)), "until": iso(now)},
        headers=case.officer,
    )
    assert r.status_code == 200
    assert [p["seq"] for p in r.json()["positions"]] == [3, 2, 1, 4]  # fix-time order, not arrival


def test_forged_replayed_stale_and_malformed_batches_are_refused(api: Api) -> None:
    case = _case(api)
    now = datetime.now(UTC)
    fixes = [position(now - timedelta(seconds=30), 0)]
    batch = case.tracker.batch("positions", fixes, now)

    forged = case.tracker.envelope(batch, key=FakeTracker("X").key)
    r = _post(api, POSITIONS, json.dumps(forged).encode())
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")

    altered = case.tracker.envelope(batch)
    altered["batch"] = altered["batch"].replace('"accuracy_m":10.0', '"accuracy_m":1.0')
    r = _post(api, POSITIONS, json.dumps(altered).encode())
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")

    good = json.dumps(case.tracker.envelope(batch)).encode()
    assert _post(api, POSITIONS, good).status_code == 201
    r = _post(api, POSITIONS, good)
    assert (r.status_code, r.json()["error"]) == (409, "replayed_nonce")

    r = _post(api, POSITIONS, FakeTracker("TRK-UNKNOWN").positions(fixes, now))
    assert (r.status_code, r.json()["error"]) == (401, "unknown_device")
    r = _post(api, POSITIONS, case.tracker.positions(fixes, now - timedelta(hours=1)))
    assert (r.status_code, r.json()["error"]) == (422, "stale_batch")
    r = _post(api, POSITIONS, case.tracker.positions([position(now + timedelta(hours=1), 0)], now))
    assert (r.status_code, r.json()["error"]) == (422, "future_fix")
    r = _post(api, POSITIONS, case.tracker.positions([position(now - timedelta(days=60), 0)], now))
    assert (r.status_code, r.json()["error"]) == (422, "fix_too_old")
    r = _post(api, POSITIONS, case.tracker.positions([{**fixes[0], "lat": 123.0}], now))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_batch")
    spaced = case.tracker.envelope(batch)
    spaced["batch"] = json.dumps(json.loads(spaced["batch"]), indent=1)
    r = _post(api, POSITIONS, json.dumps(spaced).encode())
    assert (r.status_code, r.json()["error"]) == (400, "not_canonical")
    for junk in (b"not json", b"{}", b'{"batch": 1, "signature": "x"}', b"[]"):
        assert _post(api, POSITIONS, junk).status_code == 400
    assert _post(api, POSITIONS, b"x" * (api.settings.location.max_body_bytes + 1)).status_code == 413

    with api.services.sessions() as db:
        assert db.scalar(select(Position.id).where(Position.person_id == case.person_id)) is not None
        count = len(db.scalars(select(Position).where(Position.person_id == case.person_id)).all())
        refused = db.scalars(select(AuditEntry).where(AuditEntry.action == "location_batch_refused")).all()
    assert count == 1  # only the good batch was stored
    assert {e.details["code"] for e in refused} >= {"bad_signature", "replayed_nonce", "unknown_device"}


def test_a_late_fix_completes_a_violation_and_it_is_announced_once(api: Api) -> None:
    case = _case(api)
    zone_id = _exclusion_zone(api, case)
    now = datetime.now(UTC)
    t0 = now - timedelta(minutes=30)

    # Approaching, then two fixes inside over 60 s: 2 < min_fixes (3).
    first = [
        position(t0, 400),
        position(t0 + timedelta(seconds=60), 10),
        position(t0 + timedelta(seconds=120), 0),
    ]
    r = _post(api, POSITIONS, case.tracker.positions(first, now))
    assert r.status_code == 201 and r.json()["alerts"] == []
    # One noisy fix (a multipath jump into the zone) in an otherwise distant track: no violation either.
    noisy = [position(t0 - timedelta(minutes=20, seconds=-30 * i), 600 if i != 2 else 5) for i in range(6)]
    assert _post(api, POSITIONS, case.tracker.positions(noisy, now)).json()["alerts"] == []
    assert case.hooks.events == []

    # A gateway that was offline delivers the fix taken between them: three fixes over 60 s inside.
    late = [position(t0 + timedelta(seconds=90), 5)]
    r = _post(api, POSITIONS, case.tracker.positions(late, now))
    assert r.status_code == 201
    assert [a["code"] for a in r.json()["alerts"]] == ["exclusion_entered"]

    (alert,) = _alerts(api, case)
    assert alert["kind"] == "violation" and alert["zone_id"] == zone_id
    assert alert["started_at"] == (t0 + timedelta(seconds=60)).isoformat()
    assert alert["ended_at"] == (t0 + timedelta(seconds=120)).isoformat()
    assert len(alert["position_ids"]) == 3
    assert [e.type for e in case.hooks.events] == [EventType.ALERT]
    assert case.hooks.events[0].data["alert_id"] == alert["id"]

    # More fixes inside extend the same violation: more proof, no second announcement.
    more = [position(t0 + timedelta(seconds=150 + 30 * i), 0) for i in range(3)]
    assert _post(api, POSITIONS, case.tracker.positions(more, now)).json()["alerts"] == []
    (alert,) = _alerts(api, case)
    assert len(alert["position_ids"]) == 6
    assert len(case.hooks.events) == 1

    # The workstation: the alerts list and the person's map (inline SVG, no tiles) with the proving fixes.
    page = api.client.get("/ws/alerts", params={"lang": "en"}, headers=case.officer)
    assert page.status_code == 200 and page.text.count('class="alert-row"') == 1
    page = api.client.get(
        f"/ws/persons/{case.person_id}/location",
        params={"lang": "en", "since": iso(t0 - timedelta(hours=1)), "until": iso(now)},
        headers=case.officer,
    )
    assert page.status_code == 200
    assert "<svg" in page.text and 'class="zone zone-exclusion"' in page.text
    assert page.text.count('class="fix proof"') == 6
    assert page.text.count('class="fix"') == 1 + 6  # the approach fix and the distant noisy track
    assert "http" not in page.text.split("<svg", 1)[1].split("</svg>", 1)[0].replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert api.client.get("/ws/alerts", headers=api.as_(Role.PERSON)).status_code == 403
    api.client.cookies.clear()
    assert api.client.get("/ws/alerts", follow_redirects=False).status_code == 303


def test_device_events_follow_the_policy_table(api: Api) -> None:
    case = _case(api)
    now = datetime.now(UTC)
    events = [
        {"type": "strap_opened", "t": iso(now - timedelta(minutes=3)), "details": {"strap": "fibre"}},
        {"type": "low_battery", "t": iso(now - timedelta(minutes=2))},
        {"type": "heartbeat", "t": iso(now - timedelta(minutes=1))},
    ]
    body = case.tracker.events(events, now)
    r = _post(api, EVENTS, body)
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == 3
    assert sorted((a["kind"], a["code"]) for a in r.json()["alerts"]) == [
        ("technical", "low_battery"),
        ("violation", "strap_opened"),
    ]
    assert sorted(e.data["code"] for e in case.hooks.events) == ["low_battery", "strap_opened"]
    assert [a["code"] for a in _alerts(api, case, kind="violation")] == ["strap_opened"]
    assert [a["code"] for a in _alerts(api, case, kind="technical", source="device")] == ["low_battery"]

    assert _post(api, EVENTS, body).status_code == 409  # replayed
    forged = case.tracker.envelope(case.tracker.batch("events", events, now), key=FakeTracker("X").key)
    assert _post(api, EVENTS, json.dumps(forged).encode()).status_code == 401
    unknown = case.tracker.events([{"type": "teleported", "t": iso(now)}], now)
    assert _post(api, EVENTS, unknown).status_code == 400
    with api.services.sessions() as db:
        assert (
            len(db.scalars(select(LocationAlert).where(LocationAlert.person_id == case.person_id)).all()) == 2
        )


def test_zones_are_managed_by_officers_and_validated(api: Api) -> None:
    case = _case(api)
    zones = f"/api/v1/persons/{case.person_id}/zones"
    home = {
        "kind": "inclusion",
        "label": "home",
        "geometry": {
            "type": "polygon",
            "coordinates": [
                [76.944, 43.237],
                [76.946, 43.237],
                [76.946, 43.239],
                [76.944, 43.239],
                [76.944, 43.237],
            ],
        },
        "hours": {"start": "22:00", "end": "06:00"},
    }
    r = api.client.post(zones, json=home, headers=case.officer)
    assert r.status_code == 201, r.text
    zone = r.json()
    assert zone["hours"] == {"start": "22:00", "end": "06:00"} and len(zone["geometry"]["coordinates"]) == 4
    assert api.client.post(zones, json=home, headers=api.as_(Role.PERSON)).status_code == 403
    api.client.cookies.clear()
    assert api.client.post(zones, json=home).status_code == 401
    bad_geometries: list[dict[str, Any]] = [
        {"type": "polygon", "coordinates": [[76.0, 43.0], [76.01, 43.01], [76.0, 43.01], [76.01, 43.0]]},
        {"type": "circle", "lat": 43.0, "lon": 76.0, "radius_m": -1},
        {"type": "circle", "lat": 43.0, "lon": 76.0},
    ]
    for geometry in bad_geometries:
        r = api.client.post(zones, json={**home, "geometry": geometry}, headers=case.officer)
        assert r.status_code == 400, geometry
    r = api.client.post(zones, json={**home, "hours": {"start": "22:00"}}, headers=case.officer)
    assert r.status_code == 400
    r = api.client.post(zones, json={**home, "kind": "sometimes"}, headers=case.officer)
    assert r.status_code in (400, 422)
    assert api.client.post("/api/v1/persons/nobody/zones", json=home, headers=case.officer).status_code == 404

    assert [z["id"] for z in api.client.get(zones, headers=case.officer).json()["zones"]] == [zone["id"]]
    assert api.client.delete(f"{zones}/{zone['id']}", headers=case.officer).status_code == 200
    assert api.client.delete(f"{zones}/{zone['id']}", headers=case.officer).status_code == 404
    assert api.client.get(zones, headers=case.officer).json()["zones"] == []
    listed = api.client.get(zones, params={"include_deleted": "true"}, headers=case.officer).json()["zones"]
    assert listed[0]["deleted_at"] is not None


def test_alert_queries_are_bounded(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    for params in ({"limit": "0"}, {"limit": "501"}, {"since": "2026-12-03T10:00:00"}, {"kind": "awful"}):
        r = api.client.get("/api/v1/alerts", params=params, headers=officer)
        assert 400 <= r.status_code < 500, params
    assert api.client.get("/api/v1/alerts", headers=officer).json() == {"alerts": []}
    api.client.cookies.clear()
    assert api.client.get("/api/v1/alerts").status_code == 401


def test_check_in_page_fixes_join_the_chain_and_the_zone_rules(api: Api) -> None:
    case = _case(api)
    _exclusion_zone(api, case)
    now = datetime.now(UTC)
    lat, lon = CENTRE
    fixes = [
        NewFix(now - timedelta(seconds=90 - 30 * i), lat, lon, 8.0, PositionSource.CHECKIN) for i in range(3)
    ]
    with api.services.sessions.begin() as db:
        alerts = record_checkin_fixes(db, case.person_id, fixes, now, api.settings.location)
    assert [a.code for a in alerts] == ["exclusion_entered"]
    with api.services.sessions() as db:
        report = verify_person(db, case.person_id)
        sources = db.scalars(select(Position.source).where(Position.person_id == case.person_id)).all()
    assert report.ok and report.rows_checked == 3
    assert set(sources) == {PositionSource.CHECKIN}

    with api.services.sessions.begin() as db:
        counts = erase_location(db, case.person_id)
    assert counts["positions"] == 3 and counts["location_zones"] == 1 and counts["location_alerts"] == 1
    with api.services.sessions() as db:
        assert verify_person(db, case.person_id).rows_checked == 0
