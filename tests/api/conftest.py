"""An app on the embedded default (SQLite + local evidence directory) in a temp dir, with staff accounts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.db import audit
from media_server.db.enums import Role
from media_server.db.models import User
from media_server.settings import Settings
from media_server.tokens import hash_password

PASSWORD = "correct-horse-battery"
ROLES = [Role.ADMIN, Role.OFFICER, Role.REVIEWER, Role.AUDITOR, Role.DEVICE, Role.PERSON]


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
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", models={"dir": Path("var/models").resolve()})


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
