"""Helpers for e2e tests against the real service: the profile it runs on, staff logins, enrolment photos,
waiting for a verdict."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from skimage import data
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import Role
from media_server.db.models import User, Verdict
from media_server.settings import Settings
from media_server.tokens import hash_password
from tests.api.conftest import Profile

PASSWORD = "correct-horse-battery"
STAFF = (Role.ADMIN, Role.OFFICER, Role.REVIEWER)


# What a profile decides; every other field of a module's `e2e_settings` is kept on either profile.
_PROFILE_FIELDS = frozenset({"data_dir", "database", "s3", "evidence", "celery", "models"})
# A module runs its flows on both profiles with `pytestmark = [..., BOTH_PROFILES]`.
BOTH_PROFILES = pytest.mark.parametrize(
    "e2e_profile",
    ["sqlite", pytest.param("postgres", marks=[pytest.mark.integration, pytest.mark.slow])],
    indirect=True,
)


@contextlib.contextmanager
def profile_settings(profile: Profile, settings: Settings) -> Iterator[Settings]:
    """`settings` on `profile`: its own database, store and workers, the module's other choices kept."""
    if profile.name == "sqlite":
        yield settings
        return
    kept = {name: getattr(settings, name) for name in settings.model_fields_set - _PROFILE_FIELDS}
    with profile.settings(settings.data_dir, **kept) as on_profile:
        yield on_profile


def seed_staff(services: Any) -> None:
    """One account per staff role, username = role name, password PASSWORD."""
    with services.sessions.begin() as db:
        for role in STAFF:
            user = User(username=role.value, password_hash=hash_password(PASSWORD), role=role)
            db.add(user)
            db.flush()
            audit.append(db, actor="test", action="user_created", subject_type="user", subject_id=user.id)


def login(client: httpx.Client, role: Role) -> dict[str, str]:
    """Authorization header of a fresh login as `role`."""
    r = client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def enrolment_images() -> list[bytes]:
    """The astronaut photo (public domain) and a slightly rotated copy, as PNG bytes."""
    face = Image.fromarray(data.astronaut())
    out = []
    for img in (face, face.rotate(4, fillcolor=(128, 128, 128))):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def wait_for_verdict(services: Any, session_id: str, timeout_s: float = 180) -> Verdict:
    """Poll the database until the session's verdict is written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with services.sessions() as db:
            v = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).first()
            if v is not None:
                return v
        time.sleep(0.5)
    raise AssertionError(f"no verdict was written for session {session_id} within {timeout_s} s")
