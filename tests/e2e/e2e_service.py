"""Helpers for e2e tests against the real service: staff logins, enrolment photos, waiting for a verdict."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
from PIL import Image
from skimage import data
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import Role
from media_server.db.models import User, Verdict
from media_server.tokens import hash_password

PASSWORD = "correct-horse-battery"
STAFF = (Role.ADMIN, Role.OFFICER, Role.REVIEWER)


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
