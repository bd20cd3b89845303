"""Health, readiness, metrics, auth, roles and bad input on the foundation endpoints."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import Role
from media_server.db.models import AuditEntry
from tests.api.conftest import Api


def test_health_ready_metrics_and_openapi(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["database"] == "ok"
    assert "kuzet_http_requests_total" in api.client.get("/metrics").text
    spec = api.client.get("/openapi.json").json()
    assert "/api/v1/persons" in spec["paths"]


def test_login_wrong_password_is_401_and_audited(api: Api) -> None:
    r = api.client.post("/api/v1/auth/login", json={"username": "admin", "password": "nope"})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    with api.services.sessions() as db:
        actions = db.scalars(select(AuditEntry.action)).all()
        assert "login_failed" in actions
        assert audit.verify_chain(db).ok


def test_person_device_and_checkin_flow(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    r = api.client.post(
        "/api/v1/persons", json={"external_ref": "KZ-1", "display_name": "Test Person"}, headers=officer
    )
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    assert (
        api.client.post(
            "/api/v1/persons", json={"external_ref": "KZ-1", "display_name": "Dup"}, headers=officer
        ).status_code
        == 409
    )
    r = api.client.post(f"/api/v1/persons/{person_id}/checkins", json={"window_minutes": 15}, headers=officer)
    assert r.status_code == 201
    assert r.json()["url"].startswith("/checkin/ck_")
    admin = api.as_(Role.ADMIN)
    r = api.client.post(
        "/api/v1/devices",
        json={"serial": "AV-1", "kind": "av_station", "person_id": person_id},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["device_key"].startswith("dk_")
    r = api.client.post("/api/v1/devices", json={"serial": "BR-1", "kind": "breathalyzer"}, headers=admin)
    assert r.status_code == 400 and "public key" in r.json()["message"]
    r = api.client.post(
        "/api/v1/devices",
        json={"serial": "BR-1", "kind": "breathalyzer", "public_key_b64": "AAAA"},
        headers=admin,
    )
    assert r.status_code == 422 and "32 bytes" in r.json()["message"]


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "allowed"),
    [
        (
            Role.OFFICER,
            "post",
            "/api/v1/users",
            {"username": "newuser", "password": "long-enough-pw", "role": "officer"},
            False,
        ),
        (Role.REVIEWER, "post", "/api/v1/persons", {"external_ref": "R1", "display_name": "X"}, False),
        (Role.AUDITOR, "post", "/api/v1/persons", {"external_ref": "A1", "display_name": "X"}, False),
        (Role.PERSON, "post", "/api/v1/persons", {"external_ref": "P1", "display_name": "X"}, False),
        (Role.DEVICE, "post", "/api/v1/devices", {"serial": "D1", "kind": "av_station"}, False),
        (Role.OFFICER, "post", "/api/v1/devices", {"serial": "D2", "kind": "av_station"}, False),
        (
            Role.ADMIN,
            "post",
            "/api/v1/users",
            {"username": "newuser2", "password": "long-enough-pw", "role": "reviewer"},
            True,
        ),
    ],
)
def test_roles_are_enforced(
    api: Api, role: Role, method: str, path: str, body: dict[str, str], allowed: bool
) -> None:
    r = getattr(api.client, method)(path, json=body, headers=api.as_(role))
    if allowed:
        assert r.status_code in (200, 201), r.text
    else:
        assert r.status_code == 403, r.text
        assert "may not" in r.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        (
            "post",
            "/api/v1/auth/login",
            {"content": b"\xff\x00garbage", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("post", "/api/v1/auth/login", {"json": {"username": "a"}}, 422),
        ("post", "/api/v1/persons", {"json": {"external_ref": "x", "display_name": "y"}}, 401),
        ("post", "/api/v1/persons", {"json": {}, "headers": {"Authorization": "Bearer not.a-token"}}, 401),
        ("post", "/api/v1/persons", {"json": {}, "headers": {"Authorization": "Bearer"}}, 401),
        ("get", "/api/v1/persons/nope", {"headers": {"Authorization": "Bearer x.y"}}, 401),
        ("post", "/api/v1/auth/login", {"content": b"x", "headers": {"content-length": "99999999999"}}, 413),
        ("get", "/no/such/endpoint", {}, 404),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    api: Api, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    r = getattr(api.client, method)(path, **kwargs)
    assert r.status_code == status
    body = r.json()
    assert body["error"] and body["message"]


def test_expired_token_is_refused(api: Api) -> None:
    from media_server.tokens import sign_token

    with api.services.sessions() as db:
        from media_server.db.models import User

        admin = db.scalars(select(User).where(User.username == "admin")).one()
    token = sign_token(api.services.keys.secret_key, admin.id, "admin", ttl_s=-1)
    r = api.client.get("/api/v1/persons/x", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_unknown_timezone_is_rejected(api: Api) -> None:
    r = api.client.post(
        "/api/v1/persons",
        json={"external_ref": "T", "display_name": "T", "timezone": "Mars/Base"},
        headers=api.as_(Role.OFFICER),
    )
    assert r.status_code == 422 and "time zone" in r.json()["message"]


def test_schedule_creation_and_bad_rule(api: Api) -> None:
    officer = api.as_(Role.OFFICER)
    pid = api.client.post(
        "/api/v1/persons", json={"external_ref": "S1", "display_name": "S"}, headers=officer
    ).json()["id"]
    r = api.client.post(
        f"/api/v1/persons/{pid}/schedules",
        json={"rule": {"type": "daily", "start": "09:00", "end": "10:00"}},
        headers=officer,
    )
    assert r.status_code == 201, r.text
    assert r.json()["timezone"] == "Asia/Almaty"
    r = api.client.post(
        f"/api/v1/persons/{pid}/schedules", json={"rule": {"type": "weekly"}}, headers=officer
    )
    assert r.status_code == 400 and "invalid schedule rule" in r.json()["message"]


def test_court_order_limit_is_recorded_and_used(api: Api) -> None:
    from media_server.breath import order_limit
    from sobriety.units import AlcoholUnit

    officer = api.as_(Role.OFFICER)
    pid = api.client.post(
        "/api/v1/persons", json={"external_ref": "O1", "display_name": "O"}, headers=officer
    ).json()["id"]
    limit, source = order_limit(api.services, pid)
    assert source == "default_limit_g_210l"
    r = api.client.put(
        f"/api/v1/persons/{pid}/order", json={"brac_limit": 0.25, "unit": "mg/L"}, headers=officer
    )
    assert r.status_code == 200, r.text
    limit, source = order_limit(api.services, pid)
    assert source == "court_order" and limit.limit == 0.25 and limit.unit is AlcoholUnit.MG_L
    bad = api.client.put(
        f"/api/v1/persons/{pid}/order", json={"brac_limit": -1, "unit": "mg/L"}, headers=officer
    )
    assert bad.status_code == 422
    assert (
        api.client.put(
            f"/api/v1/persons/{pid}/order",
            json={"brac_limit": 0.2, "unit": "mg/L"},
            headers=api.as_(Role.REVIEWER),
        ).status_code
        == 403
    )
