"""One security suite over both database profiles: the `api` fixture of tests/api on SQLite and on a
fresh PostgreSQL database (fixture param `profile`: "sqlite" | "postgres"; the PostgreSQL case is an
`integration` test because it needs the server)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.db import audit
from media_server.db.models import User
from media_server.services import Services
from media_server.settings import Settings
from media_server.tokens import hash_password
from tests.api.conftest import PASSWORD, ROLES, Api
from tests.conftest import drop_pg_database, fresh_pg_url
from tests.support.webrtc import ServerThread

PROFILES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.integration),
]


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def database_for(profile: str) -> Iterator[str]:
    """Empty for SQLite (the embedded default under data_dir); a fresh, dropped-after database on PostgreSQL."""
    if profile == "sqlite":
        yield ""
        return
    url = fresh_pg_url("kuzet_sec")
    try:
        yield url
    finally:
        drop_pg_database(url)


def settings_for(data_dir: Path, database_url: str) -> Settings:
    """The test settings of one profile: data under `data_dir`, the given database (empty = SQLite)."""
    return Settings(
        data_dir=data_dir,
        database={"url": database_url},
        models={"dir": Path("var/models").resolve()},
        workers={"warm_at_start": False},  # one app per test: the pool starts on its first job
    )


@pytest.fixture
def database_url(profile: str) -> Iterator[str]:
    with database_for(profile) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return settings_for(tmp_path / "var", database_url)


@functools.cache
def _staff_hash() -> str:
    # argon2id costs ~1 s on a busy CI box: one hash serves every account of every test.
    return hash_password(PASSWORD)


def seed_staff(services: Services) -> None:
    """One account per role, password `PASSWORD`, username = role name (as tests/api/conftest.py)."""
    with services.sessions.begin() as db:
        for role in ROLES:
            user = User(username=role.value, password_hash=_staff_hash(), role=role)
            db.add(user)
            db.flush()
            audit.append(
                db, actor="test", action="user_created", subject_type="user", subject_id=user.id, details={}
            )


@contextlib.contextmanager
def running_api(settings: Settings) -> Iterator[Api]:
    """`create_app(settings)` in a TestClient (lifespan run), staff seeded, cookies cleared."""
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        seed_staff(services)
        client.cookies.clear()
        yield Api(client=client, services=services, settings=settings)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with running_api(settings) as running:
        yield running


@dataclass
class LiveApi(Api):
    """`Api` over real HTTP to uvicorn on 127.0.0.1 (for streamed bodies, raw sockets and TLS)."""

    url: str = ""


@pytest.fixture
def live_api(settings: Settings) -> Iterator[LiveApi]:
    app = create_app(settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        services = app.state.services
        seed_staff(services)
        yield LiveApi(client=client, services=services, settings=settings, url=server.url)  # type: ignore[arg-type]
