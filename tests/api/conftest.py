"""The `api` fixture: the app with staff accounts, on each deployment profile.

Profiles (param ids): "sqlite" — the embedded default (SQLite + local evidence directory, in-process
worker pool); "postgres" — the production profile (a fresh PostgreSQL database per app, the real Ceph S3
test server from scripts/s3-server, and analysis on a `kuzet worker` over RabbitMQ with Redis results). Module-scoped app fixtures take the module-scoped `profile` fixture
and build their settings with `profile.settings(data_dir)`, so every API test runs on both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from media_server.app import create_app
from media_server.db import audit
from media_server.db.enums import Role
from media_server.db.models import User
from media_server.settings import CelerySettings, DatabaseSettings, EvidenceSettings, S3Settings, Settings
from media_server.tokens import hash_password
from tests.conftest import S3_TEST_PART_BYTES, CeleryQueue, S3Server, drop_pg_database, fresh_pg_url

PASSWORD = "correct-horse-battery"
ROLES = [Role.ADMIN, Role.OFFICER, Role.REVIEWER, Role.AUDITOR, Role.DEVICE, Role.PERSON]
PROFILES = ("sqlite", "postgres")
MODELS_DIR = Path("var/models").resolve()


@dataclass(frozen=True)
class Profile:
    """A deployment profile: how an app under test keeps its data."""

    name: str
    s3: S3Server | None = None
    bucket: str = ""
    celery: CeleryQueue | None = None

    @contextlib.contextmanager
    def settings(self, data_dir: Path, **overrides: Any) -> Iterator[Settings]:
        """Settings for one app on this profile; a PostgreSQL database made for it is dropped afterwards."""
        if self.name == "sqlite":
            yield Settings(data_dir=data_dir, models={"dir": MODELS_DIR}, **overrides)
            return
        assert self.s3 is not None and self.celery is not None
        url = fresh_pg_url("kuzet_api")
        try:
            yield Settings(
                data_dir=data_dir,
                models={"dir": MODELS_DIR},
                database=DatabaseSettings(url=url),
                s3=S3Settings(
                    endpoint=self.s3.endpoint,
                    access_key=SecretStr(self.s3.access_key),
                    secret_key=SecretStr(self.s3.secret_key),
                    bucket=self.bucket,
                    secure=False,
                ),
                evidence=EvidenceSettings(retention_days=1, multipart_part_bytes=S3_TEST_PART_BYTES),
                celery=CelerySettings(
                    broker_url=self.celery.broker_url,
                    result_backend=self.celery.result_backend,
                    queue=self.celery.queue,
                ),
                **overrides,
            )
        finally:
            drop_pg_database(url)


SQLITE = Profile("sqlite")


def resolve_profile(request: pytest.FixtureRequest, name: str) -> Profile:
    """The profile called `name`; the production one brings up its services (fixtures of tests/conftest)."""
    if name == "sqlite":
        return SQLITE
    request.getfixturevalue("celery_worker")  # one `kuzet worker` for the whole test session
    return Profile(
        "postgres",
        request.getfixturevalue("s3_server"),
        request.getfixturevalue("s3_bucket"),
        request.getfixturevalue("celery_queue"),
    )


@pytest.fixture(scope="module", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> Profile:
    """Each profile in turn (module scope, so module-wide apps are built once per profile)."""
    return resolve_profile(request, request.param)


@dataclass
class Api:
    client: TestClient
    services: Any
    settings: Settings

    def token(self, role: Role) -> str:
        r = self.client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def as_(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}


@pytest.fixture
def settings(profile: Profile, tmp_path: Path) -> Iterator[Settings]:
    with profile.settings(tmp_path / "var") as s:
        yield s


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        with services.sessions.begin() as db:
            for role in ROLES:
                user = User(username=role.value, password_hash=hash_password(PASSWORD), role=role)
                db.add(user)
                db.flush()
                audit.append(
                    db,
                    actor="test",
                    action="user_created",
                    subject_type="user",
                    subject_id=user.id,
                    details={},
                )
        client.cookies.clear()
        yield Api(client=client, services=services, settings=settings)
