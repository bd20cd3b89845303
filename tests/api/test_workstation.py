"""The reviewer workstation (server-rendered pages) and the review/audit JSON API, through TestClient.

One app per module (the argon2 logins and migrations are the slow part); each test seeds its own
session through the real database and evidence store (tests/api/seed.py) and looks only at its rows.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, Role
from media_server.db.models import Artifact, AuditEntry, Review
from media_server.package import public_key_b64, verify_package
from tests.api.conftest import PASSWORD, Api, Profile
from tests.api.seed import FACE_THRESHOLD, SeededSession, seed_breath_session, seed_flagged_checkin, staff_app

ARTIFACT_SRC = re.compile(r'src="/ws/artifacts/([0-9a-f-]{36})"')


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> Iterator[Api]:
    with staff_app(tmp_path_factory.mktemp("workstation") / "var", profile) as app:
        yield app


@pytest.fixture(autouse=True)
def logged_out(api: Api) -> None:
    api.client.cookies.clear()


@pytest.fixture
def mark(api: Api) -> int:
    """The audit head id before the test: rows after it are this test's."""
    with api.services.sessions() as db:
        head = audit.head(db)
        return head.id if head else 0


@pytest.fixture
def seeded(api: Api) -> SeededSession:
    tag = uuid.uuid4().hex[:8]
    return seed_flagged_checkin(api.services, external_ref=f"WS-{tag}", display_name=f"Person {tag}")


def ws_login(api: Api, role: Role = Role.REVIEWER, lang: str = "en") -> None:
    """Log in through the workstation form; the client keeps the session cookie."""
    r = api.client.post(
        f"/ws/login?lang={lang}", data={"username": role.value, "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/ws/queue?lang={lang}"


def audit_rows(api: Api, action: str, after: int) -> list[AuditEntry]:
    with api.services.sessions() as db:
        return list(
            db.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == action, AuditEntry.id > after)
                .order_by(AuditEntry.id)
            )
        )


def test_login_form_sets_the_cookie_and_the_queue_lists_the_flagged_session(
    api: Api, seeded: SeededSession, mark: int
) -> None:
    page = api.client.get("/ws/login?lang=en")
    assert page.status_code == 200 and 'name="password"' in page.text and "Log in" in page.text

    wrong = api.client.post("/ws/login?lang=en", data={"username": "reviewer", "password": "nope"})
    assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
    wrong_ru = api.client.post("/ws/login?lang=ru", data={"username": "reviewer", "password": "nope"})
    assert "Неверное имя пользователя или пароль." in wrong_ru.text and "Wrong" not in wrong_ru.text
    assert "kuzet_session" not in api.client.cookies
    assert [e.details for e in audit_rows(api, "login_failed", mark)] == [{"via": "workstation"}] * 2

    r = api.client.post(
        "/ws/login?lang=en", data={"username": "reviewer", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303
    set_cookie = r.headers["set-cookie"].lower()
    assert (
        set_cookie.startswith("kuzet_session=")
        and "httponly" in set_cookie
        and "samesite=strict" in set_cookie
    )
    assert api.client.cookies.get("kuzet_session")
    api.client.cookies.delete("kuzet_lang")

    queue = api.client.get("/ws/queue?lang=en")
    assert queue.status_code == 200
    assert queue.text.count('class="queue-row"') >= 1
    assert seeded.person_name in queue.text
    assert f'href="/ws/sessions/{seeded.session_id}?lang=en"' in queue.text
    assert "Face match: unsure" in queue.text and "Needs review" in queue.text

    api.client.get("/ws/logout")
    assert not api.client.cookies.get("kuzet_session")
    after = api.client.get("/ws/queue", follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith("/ws/login")


def test_session_page_shows_checks_frames_audio_and_recording(api: Api, seeded: SeededSession) -> None:
    ws_login(api)
    page = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en")
    assert page.status_code == 200
    html = page.text
    # checks: outcome, score, threshold and the model stamp
    face = next(c for c in seeded.checks if c.kind.value == "face")
    assert face.model is not None
    assert f"distance {face.score:.3f}, passes below {FACE_THRESHOLD:.3f}; fails above 0.520" in html
    assert f"{face.model.name} {face.model.version}" in html and face.model.weights_sha256[:12] in html
    assert html.count('<td class="inconclusive">') == 1 and html.count('<td class="pass">') == 2
    for model in ("minifasnet_v2_2.7", "resemblyzer_ge2e"):
        assert model in html
    # verdict, the check that drove it, and the stored reasons
    assert 'id="verdict"' in html and "Needs review" in html
    drivers = html.split('id="drivers"')[1].split("</ul>")[0]
    assert "Face match" in drivers and "Voice match" not in drivers
    assert all(reason.split(": ", 2)[2] in html for reason in seeded.reasons)
    assert seeded.manifest_sha256[:16] in html
    # frames with their face boxes, speech and the recording
    frame_ids = seeded.artifacts[ArtifactKind.FRAME]
    for fid in frame_ids:
        assert f'<img src="/ws/artifacts/{fid}" alt="frame" width="240">' in html
    assert html.count('class="box ') == len(frame_ids)
    assert html.count('class="box bad"') == 2  # one frame under the threshold, two just over it
    assert "43.23890, 76.88970 (± 25 m)" in html
    assert re.search(r'class="box [^"]*" style="left:\d+(\.\d+)?%;top:\d+(\.\d+)?%;width:', html)
    assert f'<audio controls src="/ws/artifacts/{seeded.artifacts[ArtifactKind.AUDIO][0]}">' in html
    assert f'src="/ws/artifacts/{seeded.artifacts[ArtifactKind.RECORDING][0]}"' in html
    assert "<video" in html
    # the recording is the received VP8/Opus, and nothing is missing from it
    assert "Stored as received, without re-encoding (vp8, opus)." in html
    assert 'id="no-gaps"' in html and "every frame the server received is in the recording" in html
    assert 'id="decide"' in html  # a reviewer gets the decision form


def test_every_artifact_view_is_audited_and_served_verified(
    api: Api, seeded: SeededSession, mark: int
) -> None:
    ws_login(api, Role.OFFICER)
    html = api.client.get(f"/ws/sessions/{seeded.session_id}").text
    assert 'id="decide"' not in html  # an officer sees evidence but does not decide
    viewed = audit_rows(api, "evidence_viewed", mark)
    assert [(e.subject_type, e.subject_id, e.actor) for e in viewed] == [
        ("session", seeded.session_id, "user:officer")
    ]
    ids = ARTIFACT_SRC.findall(html)
    expected = {i for ids_ in seeded.artifacts.values() for i in ids_}
    assert set(ids) == expected and len(ids) == 5  # recording, 3 frames, speech
    with api.services.sessions() as db:
        rows = {a.id: a for a in db.scalars(select(Artifact).where(Artifact.id.in_(ids)))}
    for artifact_id in ids:
        r = api.client.get(f"/ws/artifacts/{artifact_id}")
        assert r.status_code == 200
        assert r.headers["content-type"] == rows[artifact_id].content_type
        assert r.headers["cache-control"] == "no-store"
        assert int(r.headers["content-length"]) == len(r.content) == rows[artifact_id].size
        assert hashlib.sha256(r.content).hexdigest() == rows[artifact_id].sha256
    artifact_views = [e for e in audit_rows(api, "evidence_viewed", mark) if e.subject_type == "artifact"]
    assert [e.subject_id for e in artifact_views] == ids
    assert all(
        e.actor == "user:officer" and e.details["session_id"] == seeded.session_id for e in artifact_views
    )
    assert {e.details["sha256"] for e in artifact_views} == {rows[i].sha256 for i in ids}
    assert api.client.get("/ws/artifacts/not-an-artifact").status_code == 404
    with api.services.sessions() as db:
        assert audit.verify_chain(db).ok


def test_a_decision_needs_a_comment_then_is_stored_audited_and_leaves_the_queue(
    api: Api, seeded: SeededSession, mark: int
) -> None:
    ws_login(api)
    url = f"/ws/sessions/{seeded.session_id}/decide?lang=en"
    for data, status in [
        ({"decision": "pass", "comment": ""}, 422),  # an empty form field is a missing field
        ({"decision": "pass", "comment": "    "}, 400),
        ({"decision": "pass", "comment": "ok"}, 400),  # shorter than the minimum
        ({"decision": "pass"}, 422),
        ({"decision": "maybe", "comment": "not a decision value"}, 400),
    ]:
        r = api.client.post(url, data=data, follow_redirects=False)
        assert r.status_code == status, (data, r.text)
        assert r.headers["content-type"].startswith("text/html") and 'id="error"' in r.text
    with api.services.sessions() as db:
        assert db.scalars(select(Review).where(Review.session_id == seeded.session_id)).all() == []

    comment = "Face confirmed by eye on all three frames; lighting explains the distance."
    r = api.client.post(url, data={"decision": "pass", "comment": comment}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/ws/sessions/{seeded.session_id}?lang=en&flash=decided"
    page = api.client.get(r.headers["location"])
    assert 'id="flash"' in page.text and "Decision recorded" in page.text
    assert comment in page.text

    with api.services.sessions() as db:
        (review,) = db.scalars(select(Review).where(Review.session_id == seeded.session_id)).all()
        assert (review.session_id, review.verdict_id, review.decision) == (
            seeded.session_id,
            seeded.verdict_id,
            Decision.PASS,
        )
        assert review.comment == comment
    (decided,) = audit_rows(api, "review_decided", mark)
    assert decided.actor == "user:reviewer" and decided.subject_id == seeded.session_id
    assert decided.details["review_id"] == review.id and decided.details["decision"] == "pass"
    assert decided.details["comment_sha256"] == hashlib.sha256(comment.encode()).hexdigest()

    queue = api.client.get("/ws/queue?lang=en").text
    assert seeded.session_id not in queue and seeded.person_name not in queue
    items = api.client.get("/api/v1/reviews/queue").json()["items"]
    assert seeded.session_id not in {i["session_id"] for i in items}
    with api.services.sessions() as db:
        report = audit.verify_chain(db)
        assert report.ok and report.rows_checked > 10


def test_a_flash_is_looked_up_not_echoed(api: Api, seeded: SeededSession) -> None:
    ws_login(api)
    page = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en&flash=Call+us+to+appeal")
    assert "Call us" not in page.text and 'id="flash"' not in page.text


def test_russian_and_english_pages(api: Api, seeded: SeededSession) -> None:
    ru_login = api.client.get("/ws/login?lang=ru").text
    assert 'lang="ru"' in ru_login and "Пароль" in ru_login and "Войти" in ru_login
    ws_login(api, lang="ru")
    ru = api.client.get("/ws/queue").text  # the language is remembered in a cookie
    assert 'lang="ru"' in ru and "Очередь на проверку" in ru and "Требует проверки" in ru
    ru_session = api.client.get(f"/ws/sessions/{seeded.session_id}").text
    for text in ("Оценка и порог", "Модель", "Кадры", "Запись сеанса", "Речь", "Комментарий (обязательно)"):
        assert text in ru_session
    for text in (
        "Сверка лица",
        "неясно",
        "расстояние 0.412, проходит ниже 0.398",
        "Отметка с телефона",
        "завершён",
    ):
        assert text in ru_session
    en_session = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en").text
    assert 'lang="en"' in en_session
    for text in (
        "Score and threshold",
        "Model",
        "Sampled frames",
        "Session recording",
        "Speech",
        "Comment (required)",
    ):
        assert text in en_session
    assert "Порог" not in en_session
    kk_session = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=kk").text
    assert 'lang="kk"' in kk_session and "Бетті салыстыру" in kk_session and "белгісіз" in kk_session
    odd = api.client.get("/ws/queue?lang=xx%22%3E").text
    assert 'lang="ru"' in odd and "xx" not in odd


def test_breath_session_shows_the_reading_and_photos(api: Api) -> None:
    breath = seed_breath_session(api.services)
    ws_login(api)
    html = api.client.get(f"/ws/sessions/{breath.session_id}?lang=en").text
    assert 'id="reading"' in html and "brac_g_210l" in html and "BR-SEED-1" in html
    for pid in breath.artifacts[ArtifactKind.PHOTO]:
        assert f'src="/ws/artifacts/{pid}"' in html
    assert "Breath photos" in html and "The face under the mouthpiece could not be matched" in html


def test_json_session_detail_and_review(api: Api, seeded: SeededSession, mark: int) -> None:
    reviewer = api.as_(Role.REVIEWER)
    api.client.cookies.clear()
    queue = api.client.get("/api/v1/reviews/queue", headers=reviewer).json()["items"]
    mine = next(i for i in queue if i["session_id"] == seeded.session_id)
    assert mine["verdict_id"] == seeded.verdict_id and mine["person"] == seeded.person_name

    body = api.client.get(f"/api/v1/sessions/{seeded.session_id}", headers=reviewer).json()
    assert body["verdict"]["decision"] == "review"
    assert body["verdict"]["manifest_sha256"] == seeded.manifest_sha256
    assert body["verdict"]["thresholds"]["face.borderline"] == FACE_THRESHOLD
    face = next(c for c in body["checks"] if c["kind"] == "face")
    assert face["outcome"] == "inconclusive" and face["threshold"] == FACE_THRESHOLD
    assert face["model"]["name"] == "dlib_resnet_face_v1" and len(face["model"]["weights_sha256"]) == 64
    frames = [a for a in body["artifacts"] if a["kind"] == "frame"]
    assert len(frames) == 3
    for f in frames:
        (box,) = f["meta"]["boxes"]
        assert set(box) == {"left_pct", "top_pct", "width_pct", "height_pct", "match"}
        assert 0 < box["width_pct"] < 100 and isinstance(f["meta"]["t_s"], float)
    audio = next(a for a in body["artifacts"] if a["kind"] == "audio")
    wav = api.client.get(audio["url"], headers=reviewer)
    assert wav.content[:4] == b"RIFF" and hashlib.sha256(wav.content).hexdigest() == audio["sha256"]
    (viewed,) = [e for e in audit_rows(api, "evidence_viewed", mark) if e.subject_type == "session"]
    assert viewed.details["via"] == "api" and viewed.actor == "user:reviewer"

    url = f"/api/v1/sessions/{seeded.session_id}/reviews"
    for payload in [
        {"decision": "fail"},
        {"decision": "fail", "comment": "   \n "},
        {"decision": "nope", "comment": "bad decision value"},
        {"decision": "fail", "comment": "fine", "extra": 1},
    ]:
        r = api.client.post(url, json=payload, headers=reviewer)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "validation_error" and r.json()["message"]
    missing = api.client.post(
        "/api/v1/sessions/no-such-session/reviews",
        json={"decision": "fail", "comment": "x" * 10},
        headers=reviewer,
    )
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert api.client.get("/api/v1/sessions/no-such-session", headers=reviewer).status_code == 404

    r = api.client.post(
        url, json={"decision": "fail", "comment": "  Not the enrolled person.  "}, headers=reviewer
    )
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["decision"] == "fail" and stored["comment"] == "Not the enrolled person."
    assert stored["verdict_id"] == seeded.verdict_id
    queue = api.client.get("/api/v1/reviews/queue", headers=reviewer).json()["items"]
    assert seeded.session_id not in {i["session_id"] for i in queue}
    again = api.client.get(f"/api/v1/sessions/{seeded.session_id}", headers=reviewer).json()
    assert [rv["id"] for rv in again["reviews"]] == [stored["id"]]


def test_audit_api_pages_and_verifies(api: Api, seeded: SeededSession) -> None:
    auditor = api.as_(Role.AUDITOR)
    api.client.cookies.clear()
    first = api.client.get("/api/v1/audit?limit=3", headers=auditor).json()
    assert [r["id"] for r in first["rows"]] == [1, 2, 3] and first["next_after_id"] == 3
    assert first["rows"][1]["prev_hash"] == first["rows"][0]["row_hash"]
    everything: list[dict[str, object]] = []
    after = 0
    while True:
        page = api.client.get(f"/api/v1/audit?after_id={after}&limit=4", headers=auditor).json()
        everything += page["rows"]
        if page["next_after_id"] is None:
            break
        after = page["next_after_id"]
    assert [r["id"] for r in everything] == list(range(1, len(everything) + 1))
    assert {"verdict_written", "evidence_stored", "login"} <= {r["action"] for r in everything}

    report = api.client.get("/api/v1/audit/verify", headers=auditor).json()
    assert report["ok"] is True and report["rows_checked"] == len(everything)
    head = report["head"]
    assert head == {"id": everything[-1]["id"], "row_hash": everything[-1]["row_hash"]}
    anchored = api.client.get(
        f"/api/v1/audit/verify?head_id={head['id']}&head_hash={head['row_hash']}", headers=auditor
    ).json()
    assert anchored["ok"] is True
    wrong = api.client.get(f"/api/v1/audit/verify?head_id={head['id']}&head_hash={'0' * 64}", headers=auditor)
    assert wrong.json()["ok"] is False and wrong.json()["problem"] == "head_mismatch"

    for query, status in [
        ("/api/v1/audit?limit=0", 422),
        ("/api/v1/audit?limit=100000", 422),
        ("/api/v1/audit?after_id=-1", 422),
        ("/api/v1/audit?after_id=abc", 422),
        ("/api/v1/audit/verify?head_id=3", 400),
        ("/api/v1/audit/verify?head_id=3&head_hash=XYZ", 400),
    ]:
        r = api.client.get(query, headers=auditor)
        assert r.status_code == status, (query, r.text)
        assert r.json()["error"] and r.json()["message"]


def test_the_workstation_export_link_downloads_a_verifiable_package(
    api: Api, seeded: SeededSession, mark: int
) -> None:
    ws_login(api)
    html = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en").text
    link = f"/api/v1/sessions/{seeded.session_id}/package"
    assert f'href="{link}"' in html
    r = api.client.get(link)  # the workstation cookie authenticates the API too
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f"kuzet-session-{seeded.session_id}.zip" in r.headers["content-disposition"]
    key = public_key_b64(api.services.signing_key)
    report = verify_package(r.content, key)
    assert report.ok, report.problems
    assert report.session_id == seeded.session_id
    (export,) = audit_rows(api, "evidence.export", mark)
    assert export.actor == "user:reviewer" and export.subject_id == seeded.session_id
    assert api.client.get("/api/v1/sessions/nope/package").status_code == 404
