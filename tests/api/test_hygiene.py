"""Input hygiene and database failures answer the same on both profiles (media_server/hygiene.py).

NUL characters, lone surrogates and 30-digit integers reached PostgreSQL as 500s (issue 12); SQLite
stored them. Both profiles now refuse them alike, before anything is written; a database that cannot be
reached is a 503 with Retry-After; a pooled connection the server killed is replaced transparently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, literal, select, text
from sqlalchemy.orm import sessionmaker

from media_server.db.enums import Role
from media_server.db.models import AuditEntry, Person, User
from media_server.hygiene import InvalidValue, guard_engine
from tests.api.conftest import PASSWORD, Api, Profile
from tests.api.seed import staff_app
from tests.conftest import PG_ADMIN_URL


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> Iterator[Api]:
    """One app per profile for the module (the app only changes in ways each test restores)."""
    with staff_app(tmp_path_factory.mktemp("hygiene") / "var", profile) as app:
        yield app


def _count(api: Api, model: type) -> int:
    with api.services.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_nul_in_login_is_refused_alike_and_writes_nothing(api: Api) -> None:
    before = _count(api, AuditEntry)
    r = api.client.post("/api/v1/auth/login", json={"username": "a\u0000b", "password": PASSWORD})
    assert r.status_code == 422 and r.json()["error"] == "invalid_value", r.text
    r = api.client.post("/ws/login", data={"username": "a\u0000b", "password": PASSWORD})
    # the workstation answers its errors as an HTML page in the reader's language
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    assert _count(api, AuditEntry) == before
    assert (
        api.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).status_code
        == 200
    )


@pytest.mark.parametrize(
    "raw_name",
    [b'"Ann\\u0000a"', b'"Ann\\ud800a"'],
    ids=["nul", "lone-surrogate"],
)
def test_invalid_text_in_a_body_field_is_422_and_stores_nothing(api: Api, raw_name: bytes) -> None:
    before = _count(api, Person)
    body = b'{"external_ref": "HY-1", "display_name": ' + raw_name + b"}"
    r = api.client.post(
        "/api/v1/persons",
        content=body,
        headers={**api.as_(Role.OFFICER), "content-type": "application/json"},
    )
    # pydantic's JSON parser refuses a lone surrogate itself; the NUL is refused at the database boundary
    assert r.status_code == 422 and r.json()["error"] in ("invalid_value", "validation_error"), r.text
    assert _count(api, Person) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/persons/a%00b",
        "/api/v1/sessions/%00",
        "/api/v1/audit?after_id=%00",
        "/api/v1/persons/x?lang=a%00b",
        "/ws/sessions/a%01b",
    ],
)
def test_control_characters_in_path_or_query_are_400(api: Api, path: str) -> None:
    r = api.client.get(path, headers=api.as_(Role.ADMIN))
    assert r.status_code == 400 and r.json()["error"] == "bad_input", r.text


@pytest.mark.parametrize("after_id", [10**30, 2**63, 2**31, -1])
def test_integers_beyond_the_column_are_422(api: Api, after_id: int) -> None:
    r = api.client.get(f"/api/v1/audit?after_id={after_id}", headers=api.as_(Role.AUDITOR))
    assert r.status_code == 422, r.text
    assert (
        api.client.get("/api/v1/audit?after_id=2147483647", headers=api.as_(Role.AUDITOR)).status_code == 200
    )


def _unreachable_url(api: Api) -> str:
    if api.services.engine.url.get_backend_name() == "sqlite":
        return "sqlite:////proc/kuzet-no-such-dir/kuzet.db"  # cannot be created: "unable to open"
    return "postgresql+psycopg://postgres@127.0.0.1:9/kuzet?connect_timeout=2"  # nothing listens on 9


def test_an_unreachable_database_is_503_with_retry_after(api: Api) -> None:
    token = api.token(Role.AUDITOR)
    real = api.services.sessions
    dead = create_engine(_unreachable_url(api))
    api.services.sessions = sessionmaker(bind=dead, expire_on_commit=False)
    try:
        for request in (
            lambda: api.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}),
            lambda: api.client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"}),
        ):
            r = request()
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "database_unavailable"
            assert r.headers["retry-after"] == str(api.settings.database.retry_after_s)
    finally:
        api.services.sessions = real
        dead.dispose()
    assert api.client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_login_after_the_server_killed_pooled_connections_succeeds(api: Api, profile: Profile) -> None:
    if profile.name != "postgres":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    assert (
        api.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).status_code
        == 200
    )  # the pool now holds an open connection
    database = api.services.engine.url.database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).scalar_one()
    finally:
        admin.dispose()
    assert killed >= 1
    for _ in range(3):  # every pooled connection is dead: pre-ping replaces each at checkout
        r = api.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200, r.text
    assert _count(api, User) == 6


@pytest.mark.parametrize("value", ["a\u0000b", "\udc80", 2**63, -(2**63) - 1])
def test_the_database_guard_refuses_what_no_column_can_hold(value: object) -> None:
    engine = create_engine("sqlite://")
    guard_engine(engine)
    guard_engine(engine)  # idempotent
    with engine.connect() as conn:
        with pytest.raises(InvalidValue):
            conn.execute(select(literal(value)))
        assert conn.execute(select(literal(2**63 - 1))).scalar_one() == 2**63 - 1
    engine.dispose()
