"""Role matrix: every role is refused what it must not do (403, nothing written) and allowed what it must.

One app (SQLite + local evidence store in a temp dir) with a seeded flagged session serves the whole
module; each role logs in once.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from media_server.db import audit
from media_server.db.enums import ArtifactKind, Role
from media_server.db.models import AuditEntry, CheckSession, Device, Person, Review, User
from media_server.package import public_key_b64, verify_package
from tests.api.conftest import ROLES, Profile
from tests.api.seed import SeededSession, seed_flagged_checkin, staff_app

ADMIN, OFFICER, REVIEWER, AUDITOR, DEVICE, PERSON = ROLES
EVIDENCE_VIEWERS = {ADMIN, OFFICER, REVIEWER}


@dataclass
class World:
    client: TestClient
    services: Any
    headers: dict[Role, dict[str, str]]
    seeded: SeededSession  # reviewers decide on this one
    pending: SeededSession  # never decided: stays in the queue
    counter: Iterator[int]

    def count(self, model: Any) -> int:
        with self.services.sessions() as db:
            return int(db.scalar(select(func.count()).select_from(model)) or 0)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> Iterator[World]:
    with staff_app(tmp_path_factory.mktemp("roles") / "var", profile) as api:
        headers = {role: api.as_(role) for role in ROLES}
        api.client.cookies.clear()  # the logins also set a cookie; each request below names its caller
        seeded = seed_flagged_checkin(api.services)
        pending = seed_flagged_checkin(api.services, external_ref="SEED-P", display_name="Pending Person")
        yield World(api.client, api.services, headers, seeded, pending, itertools.count())


# -- the API ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One thing a caller may try, who may do it, what proves it happened, and what it writes."""

    allowed: frozenset[Role]
    call: Callable[[World, dict[str, str]], Response]
    effect: Callable[[World, Response], None]
    writes: Any = None  # the table a refused call must leave untouched


def _post(w: World, path: str, body: dict[str, Any], headers: dict[str, str]) -> Response:
    r: Response = w.client.post(path, json=body, headers=headers)
    return r


def _create_user(w: World, h: dict[str, str]) -> Response:
    body = {"username": w.unique("newuser"), "password": "long-enough-pw", "role": "officer"}
    return _post(w, "/api/v1/users", body, h)


def _create_person(w: World, h: dict[str, str]) -> Response:
    body = {"external_ref": w.unique("KZ-R"), "display_name": "Role Test"}
    return _post(w, "/api/v1/persons", body, h)


def _register_device(w: World, h: dict[str, str]) -> Response:
    body = {"serial": w.unique("AV-R"), "kind": "av_station", "person_id": w.seeded.person_id}
    return _post(w, "/api/v1/devices", body, h)


def _request_checkin(w: World, h: dict[str, str]) -> Response:
    return _post(w, f"/api/v1/persons/{w.seeded.person_id}/checkins", {"window_minutes": 5}, h)


def _decide(w: World, h: dict[str, str]) -> Response:
    body = {"decision": "pass", "comment": "face confirmed by eye on all three frames"}
    return _post(w, f"/api/v1/sessions/{w.seeded.session_id}/reviews", body, h)


def _created(r: Response) -> None:
    assert r.status_code == 201, r.text
    assert r.json()["id"]


def _checkin_link(w: World, r: Response) -> None:
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith("/checkin/ck_")


def _queue_lists_seeded(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    items = {item["session_id"]: item for item in r.json()["items"]}
    pending = items[w.pending.session_id]
    assert pending["decision"] == "review" and pending["reasons"] == w.pending.reasons


def _session_detail(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session"]["id"] == w.seeded.session_id
    assert {c["kind"] for c in body["checks"]} == {"face", "pad", "voice"}


def _artifact_bytes(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/webm"
    with w.services.sessions() as db:
        from media_server.db.models import Artifact

        row = db.get(Artifact, w.seeded.artifacts[ArtifactKind.RECORDING][0])
        assert row is not None
        assert hashlib.sha256(r.content).hexdigest() == row.sha256


def _review_stored(w: World, r: Response) -> None:
    assert r.status_code == 201, r.text
    with w.services.sessions() as db:
        review = db.get(Review, r.json()["id"])
        assert review is not None and review.decision.value == "pass"


def _audit_rows(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert rows and rows[0]["id"] == 1 and len(rows[0]["row_hash"]) == 64


def _chain_ok(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["rows_checked"] > 0


def _package_verifies(w: World, r: Response) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert zipfile.is_zipfile(io.BytesIO(r.content))
    key = public_key_b64(w.services.signing_key)
    report = verify_package(r.content, key)
    assert report.ok, report.problems
    assert report.session_id == w.seeded.session_id


ACTIONS: dict[str, Action] = {
    "create_user": Action(frozenset({ADMIN}), _create_user, lambda w, r: _created(r), User),
    "create_person": Action(frozenset({ADMIN, OFFICER}), _create_person, lambda w, r: _created(r), Person),
    "register_device": Action(frozenset({ADMIN}), _register_device, lambda w, r: _created(r), Device),
    "request_checkin": Action(
        frozenset({ADMIN, OFFICER}),
        _request_checkin,
        _checkin_link,
        CheckSession,
    ),
    "view_queue": Action(
        frozenset(EVIDENCE_VIEWERS),
        lambda w, h: w.client.get("/api/v1/reviews/queue", headers=h),
        _queue_lists_seeded,
    ),
    "view_session_detail": Action(
        frozenset(EVIDENCE_VIEWERS),
        lambda w, h: w.client.get(f"/api/v1/sessions/{w.seeded.session_id}", headers=h),
        _session_detail,
    ),
    "view_artifact_bytes": Action(
        frozenset(EVIDENCE_VIEWERS),
        lambda w, h: w.client.get(
            f"/api/v1/artifacts/{w.seeded.artifacts[ArtifactKind.RECORDING][0]}", headers=h
        ),
        _artifact_bytes,
    ),
    "decide_review": Action(frozenset({REVIEWER}), _decide, _review_stored, Review),
    "read_audit_log": Action(
        frozenset({AUDITOR, ADMIN}),
        lambda w, h: w.client.get("/api/v1/audit?limit=5", headers=h),
        _audit_rows,
    ),
    "verify_audit_log": Action(
        frozenset({AUDITOR, ADMIN}),
        lambda w, h: w.client.get("/api/v1/audit/verify", headers=h),
        _chain_ok,
    ),
    "export_package": Action(
        frozenset(EVIDENCE_VIEWERS),
        lambda w, h: w.client.get(f"/api/v1/sessions/{w.seeded.session_id}/package", headers=h),
        _package_verifies,
    ),
}


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
@pytest.mark.parametrize("name", list(ACTIONS))
def test_role_matrix(world: World, name: str, role: Role) -> None:
    action = ACTIONS[name]
    before = world.count(action.writes) if action.writes is not None else None
    r = action.call(world, world.headers[role])
    if role in action.allowed:
        action.effect(world, r)
        return
    assert r.status_code == 403, f"{role.value} may not {name}: got {r.status_code} {r.text}"
    body = r.json()
    assert body["error"] == "forbidden" and "may not" in body["message"]
    if before is not None:
        assert world.count(action.writes) == before, f"a refused {name} wrote a row"


@pytest.mark.parametrize("name", list(ACTIONS))
def test_unauthenticated_api_is_401(world: World, name: str) -> None:
    assert not world.client.cookies
    r = ACTIONS[name].call(world, {})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


def _last_audit(w: World) -> AuditEntry:
    with w.services.sessions() as db:
        last: AuditEntry = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).one()
        return last


def test_views_and_exports_are_audited(world: World) -> None:
    sid = world.seeded.session_id
    assert world.client.get(f"/api/v1/sessions/{sid}", headers=world.headers[OFFICER]).status_code == 200
    last = _last_audit(world)
    assert (last.action, last.actor, last.subject_id) == ("evidence_viewed", "user:officer", sid)
    assert (
        world.client.get(f"/api/v1/sessions/{sid}/package", headers=world.headers[OFFICER]).status_code == 200
    )
    last = _last_audit(world)
    assert (last.action, last.actor, last.subject_id) == ("evidence.export", "user:officer", sid)
    refused = world.client.get(f"/api/v1/sessions/{sid}/package", headers=world.headers[AUDITOR])
    assert refused.status_code == 403
    assert _last_audit(world).id == last.id, "a refused export must not be logged as an export"
    with world.services.sessions() as db:
        assert audit.verify_chain(db).ok


# -- the workstation pages -------------------------------------------------------------------------

WS_PAGES = ["queue", "session", "artifact"]


def _ws_path(w: World, page: str) -> str:
    if page == "queue":
        return "/ws/queue"
    if page == "session":
        return f"/ws/sessions/{w.pending.session_id}"
    return f"/ws/artifacts/{w.pending.artifacts[ArtifactKind.FRAME][0]}"


@pytest.mark.parametrize("page", WS_PAGES)
def test_workstation_without_login_redirects_to_login(world: World, page: str) -> None:
    r = world.client.get(_ws_path(world, page), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ws/login")
    garbage = world.client.get(
        _ws_path(world, page), headers={"Authorization": "Bearer x.y"}, follow_redirects=False
    )
    assert garbage.status_code == 303 and garbage.headers["location"].startswith("/ws/login")


def test_workstation_decide_without_login_redirects_and_stores_nothing(world: World) -> None:
    before = world.count(Review)
    r = world.client.post(
        f"/ws/sessions/{world.seeded.session_id}/decide",
        data={"decision": "fail", "comment": "no login"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/ws/login")
    assert world.count(Review) == before


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
@pytest.mark.parametrize("page", WS_PAGES)
def test_workstation_pages_by_role(world: World, page: str, role: Role) -> None:
    r = world.client.get(_ws_path(world, page), headers=world.headers[role], follow_redirects=False)
    if role in EVIDENCE_VIEWERS:
        assert r.status_code == 200, r.text
        if page == "artifact":
            assert r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
        else:
            assert world.pending.person_name in r.text
    else:
        assert r.status_code == 403, r.text
        # workstation errors are HTML pages that name the problem
        assert r.headers["content-type"].startswith("text/html") and "no access to the workstation" in r.text


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
def test_workstation_decision_is_reviewer_only(world: World, role: Role) -> None:
    before = world.count(Review)
    r = world.client.post(
        f"/ws/sessions/{world.seeded.session_id}/decide",
        data={"decision": "review", "comment": f"second look requested by {role.value}"},
        headers=world.headers[role],
        follow_redirects=False,
    )
    if role is REVIEWER:
        assert r.status_code == 303 and "flash=decided" in r.headers["location"]
        assert world.count(Review) == before + 1
    else:
        assert r.status_code == 403, r.text
        assert world.count(Review) == before
