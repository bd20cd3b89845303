"""Workstation pages and the APIs behind them, through TestClient on the embedded profile.

HTTP Range on evidence bytes, queue filters / paging / local times (also for a person outside Almaty's
zone), person pages with their schedules in words and the persons API, a breath episode with its retests,
HTML error pages (404, 405, a bug's 500), the review-queue gauge, and the decision form going away after
a decision.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from starlette.exceptions import HTTPException

from media_server.api import workstation
from media_server.api.workstation import parse_range
from media_server.db.enums import ArtifactKind, Role
from media_server.db.models import Artifact, AuditEntry, CheckSession, Person, Verdict
from tests.api.conftest import PASSWORD, Api
from tests.api.seed import staff_app
from tests.api.seed_workstation import (
    CONFIRMATORY_BRAC,
    DIGITS,
    GAP,
    ORDER_LIMIT_G_210L,
    RECORDING_T0_S,
    ZERO_THRESHOLD_G_210L,
    SeededEpisode,
    seed_breath_episode,
    seed_challenge_checkin,
    seed_checkin_history,
)

LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+05")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with staff_app(tmp_path_factory.mktemp("ws-pages") / "var") as app:
        yield app


@pytest.fixture(autouse=True)
def logged_out(api: Api) -> None:
    api.client.cookies.clear()


@pytest.fixture(scope="module")
def episode(api: Api) -> SeededEpisode:
    return seed_breath_episode(api.services, external_ref="EP-1", display_name="Aigerim Episode")


def login(api: Api, role: Role = Role.REVIEWER) -> None:
    r = api.client.post(
        "/ws/login", data={"username": role.value, "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303


def _recording(api: Api) -> tuple[str, bytes]:
    seeded = seed_challenge_checkin(api.services, external_ref=f"R-{uuid.uuid4().hex[:6]}")
    (rid,) = seeded.artifacts[ArtifactKind.RECORDING]
    with api.services.sessions() as db:
        row = db.get(Artifact, rid)
        assert row is not None
        return rid, api.services.store.get_bytes(row.key)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 3)),
        ("bytes=4-", 10, (4, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole file (allowed by RFC 9110)
        ("items=0-3", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=7-3", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 10)


def test_range_requests_on_the_recording(api: Api) -> None:
    rid, data = _recording(api)
    size = len(data)
    login(api, Role.OFFICER)
    whole = api.client.get(f"/ws/artifacts/{rid}")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.content == data and int(whole.headers["content-length"]) == size

    part = api.client.get(f"/ws/artifacts/{rid}", headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1123/{size}"
    assert part.headers["content-length"] == "1024" and part.content == data[100:1124]
    assert part.headers["content-type"] == "video/webm"

    tail = api.client.get(f"/ws/artifacts/{rid}", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"

    rest = api.client.get(f"/ws/artifacts/{rid}", headers={"Range": f"bytes={size - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]

    bad = api.client.get(f"/ws/artifacts/{rid}", headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"

    # the JSON API serves the same ranges
    api.client.cookies.clear()
    token = api.as_(Role.REVIEWER)
    r = api.client.get(f"/api/v1/artifacts/{rid}", headers={**token, "Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    assert hashlib.sha256(api.client.get(f"/api/v1/artifacts/{rid}", headers=token).content).digest() == (
        hashlib.sha256(data).digest()
    )
    # every ranged view is audited with the range asked for
    with api.services.sessions() as db:
        ranges = [
            e.details.get("range")
            for e in db.scalars(
                select(AuditEntry).where(AuditEntry.action == "evidence_viewed", AuditEntry.subject_id == rid)
            )
        ]
    assert "bytes=100-1123" in ranges and "bytes=0-99" in ranges


def test_session_page_explains_the_decision_in_russian(api: Api) -> None:
    seeded = seed_challenge_checkin(api.services, external_ref="CH-RU", display_name="Ерлан Проверка")
    login(api)
    html = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=ru").text
    summary = html.split('id="drivers"')[1].split("</ul>")[0]
    # the check that drove the verdict comes first, with its reason, unit, threshold and direction
    assert "Проверка живости" in summary and "Голова повернулась в другую сторону (17.80°)." in summary
    assert "поворот головы, градусы -2.22, проходит от 15 и выше" in summary
    assert "расстояние 0.017, проходит ниже 0.069; не проходит выше 0.520" in html
    # the challenge timeline: prompt, window, response, outcome, and where the recording shows it
    timeline = html.split('id="timeline"')[1].split("</ol>")[0]
    steps = re.findall(r'data-seek="([\d.]+)" data-step="(\d)"', timeline)
    assert steps == [("0.4", "0"), ("1.2", "1"), ("2.1", "2")]
    assert "Поворот головы влево" in timeline and f"Прочитать цифры вслух: {DIGITS}" in timeline
    assert "замечено через 0.3 с после подсказки" in timeline and "окно 0.6 с" in timeline
    # the recording: stored as received, and its one gap, where to seek and why it is missing
    gaps = html.split('id="recording-gaps"')[1].split("</div>")[0]
    assert (
        "Пропуски в записи" in gaps
        and "Сохранено так, как получено, без перекодирования (vp8, opus)." in gaps
    )
    assert "Пропусков: 1; недостающих кадров: видео 4, звук 0." in gaps
    assert re.findall(r'data-seek="([\d.]+)"', gaps) == [f"{GAP['t_s'] - RECORDING_T0_S:.1f}"]
    assert "потеряно в сети" in gaps and "недостаёт кадров: 4" in gaps and "видео" in gaps
    # frames say why they were or were not used
    assert "Слишком темно." in html and "использован для решения" in html
    # times in the person's zone, to the second
    assert LOCAL_TIME.search(html) and ".000" not in html and "+00:00" not in html
    # nothing English leaks into the Russian page but the stored, collapsed verdict reasons
    visible = re.sub(r"<[^>]*>", " ", html.replace(html.split("<details>")[1].split("</details>")[0], ""))
    for english in ("passed", "failed", "inconclusive", "checkin", "wrong_direction", "Head turn"):
        assert english not in visible, english


def test_breath_episode_page(api: Api, episode: SeededEpisode) -> None:
    login(api)
    html = api.client.get(f"/ws/sessions/{episode.confirmatory.session_id}?lang=en").text
    reading = html.split('id="reading"')[1].split("</table>")[0]
    assert f"<th>BrAC</th><td>{CONFIRMATORY_BRAC}</td>" in reading and "BR-EPISODE-1" in reading
    assert "Blow started" in reading and LOCAL_TIME.search(reading)
    photos = html.split('id="photos"')[1]
    assert photos.count('class="photo"') == 3 and "Photo 2 · " in photos
    assert (
        'Mouthpiece not visible. <span class="muted">(mouthpiece coverage 0.040, passes at 0.120 or above)'
        in photos
    )
    # the reused photo is shown beside the earlier one, linked to the earlier test
    earlier_photo = episode.earlier.artifacts[ArtifactKind.PHOTO][0]
    assert f'src="/ws/artifacts/{earlier_photo}"' in photos and "3 bits apart" in photos
    assert f'href="/ws/sessions/{episode.earlier.session_id}?lang=en"' in photos
    # the episode: screening linked from the confirmatory test
    ep = html.split('id="episode"')[1].split("</table>")[0]
    assert (
        "confirmed positive" in ep
        and "next: retest to zero" in ep
        and f'href="/ws/sessions/{episode.screening.session_id}?lang=en"' in ep
    )
    assert "0.045 g/210L" in ep and "0.041 g/210L" in ep
    kk = api.client.get(f"/ws/sessions/{episode.confirmatory.session_id}?lang=kk").text
    assert "Алкогольге тест эпизоды" in kk and "растайтын" in kk and "Бұзушылық" in kk


def test_queue_filters_sort_paging_and_local_times(
    api: Api, episode: SeededEpisode, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_challenge_checkin(api.services, external_ref="Q-1", display_name="Queue Checkin")
    login(api)
    breath = api.client.get("/ws/queue?lang=en&kind=breath").text
    assert "Aigerim Episode" in breath and "Queue Checkin" not in breath
    assert "Breath test" in breath and "(confirmatory)" in breath and "(screening)" in breath
    # the screening and the confirmatory test are marked as one episode
    assert breath.count("episode: confirmed positive, 2 tests") == 2
    fails = api.client.get("/ws/queue?lang=en&decision=fail&person=aigerim").text
    assert fails.count('class="queue-row"') == 1 and "Breath reading: failed" in fails
    assert LOCAL_TIME.search(fails)
    by_ref = api.client.get("/ws/queue?lang=en&person=EP-1").text
    assert by_ref.count('class="queue-row"') == 3  # the earlier test waits too (a photo was unsure)
    none = api.client.get("/ws/queue?lang=en&from=2001-01-01&to=2001-01-02").text
    assert 'class="queue-row"' not in none and "Nothing is waiting for a decision." in none
    newest = api.client.get("/ws/queue?lang=en&person=EP-1&sort=newest").text
    oldest = api.client.get("/ws/queue?lang=en&person=EP-1&sort=oldest").text
    assert newest.index("(confirmatory)") < newest.index("(screening)")
    assert oldest.index("(screening)") < oldest.index("(confirmatory)")
    monkeypatch.setattr(workstation, "QUEUE_PAGE_SIZE", 1)
    first = api.client.get("/ws/queue?lang=en&person=EP-1").text
    assert first.count('class="queue-row"') == 1 and "Page 1 of 3" in first and 'id="next"' in first
    last = api.client.get("/ws/queue?lang=en&person=EP-1&page=3").text
    assert "Page 3 of 3" in last and 'id="prev"' in last and 'id="next"' not in last
    bad = api.client.get("/ws/queue?lang=en&kind=nope")
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")


def test_decided_sessions_show_the_reviewer_and_hide_the_form(api: Api) -> None:
    seeded = seed_challenge_checkin(api.services, external_ref="D-1", display_name="Decided Person")
    login(api)
    page = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en").text
    assert 'id="decide-form"' in page
    r = api.client.post(
        f"/ws/sessions/{seeded.session_id}/decide?lang=en",
        data={"decision": "fail", "comment": "Turned right when asked to turn left, twice."},
        follow_redirects=False,
    )
    assert r.status_code == 303
    after = api.client.get(r.headers["location"]).text
    assert 'id="decide-form"' not in after and 'id="flash"' in after
    assert "Violation</span> — reviewer" in after
    decided = api.client.get("/ws/queue?lang=en&state=decided&person=D-1").text
    assert decided.count('class="queue-row"') == 1 and "reviewer" in decided
    api.client.cookies.clear()
    body = api.client.get(f"/api/v1/sessions/{seeded.session_id}", headers=api.as_(Role.REVIEWER)).json()
    assert [r["reviewer"] for r in body["reviews"]] == ["reviewer"]


def test_error_pages_are_html_in_the_readers_language(api: Api) -> None:
    login(api)
    missing = api.client.get("/ws/sessions/no-such-session?lang=ru")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "Не найдено" in missing.text and 'id="error"' in missing.text
    assert api.client.get("/ws/persons/nobody?lang=kk").text.count("Табылмады") >= 1
    nowhere = api.client.get("/ws/no/such/page?lang=en")
    assert nowhere.status_code == 404 and "Not found" in nowhere.text
    # the JSON API keeps JSON errors
    api.client.cookies.clear()
    api_missing = api.client.get("/api/v1/sessions/no-such-session", headers=api.as_(Role.REVIEWER))
    assert api_missing.status_code == 404 and api_missing.json()["error"] == "not_found"


def test_person_page_and_api(api: Api, episode: SeededEpisode) -> None:
    seed_checkin_history(api.services, episode.person_id, days=5)
    login(api)
    html = api.client.get(f"/ws/persons/{episode.person_id}?lang=en").text
    assert "alcohol limit 0.02 g/210L" in html and "BR-EP-1" in html and "not enrolled" in html
    brac = html.split('id="brac-chart"')[1].split("</svg>")[0]
    assert (
        brac.count('class="reading ') == 3 and 'class="limit"' in brac and f"{ORDER_LIMIT_G_210L:.3f}" in brac
    )
    days = html.split('id="outcome-chart"')[1].split("</svg>")[0]
    assert 3 <= days.count('class="day ') <= 10 and "Pass" in days
    assert html.count('class="session-row"') == 3 + 5 + 3  # breath tests + history check-ins (1 or 2 a day)
    ru = api.client.get(f"/ws/persons/{episode.person_id}?lang=ru").text
    assert "предел алкоголя 0.02 g/210L" in ru and "Алкоголь в выдохе по времени" in ru
    people = api.client.get("/ws/persons?lang=en&q=aigerim").text
    assert people.count('class="person-row"') == 1

    api.client.cookies.clear()
    token = api.as_(Role.OFFICER)
    listed = api.client.get("/api/v1/persons?q=Aigerim&limit=5", headers=token).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == episode.person_id
    page = api.client.get("/api/v1/persons?limit=1&offset=1", headers=token).json()
    assert len(page["items"]) == 1 and page["total"] >= 2
    person = api.client.get(f"/api/v1/persons/{episode.person_id}", headers=token).json()
    assert person["order"] == {"brac_limit": ORDER_LIMIT_G_210L, "unit": "g/210L"}
    assert person["enrolled"] is False and person["enrolment"] == {"face": None, "voice": None}
    assert [d["serial"] for d in person["devices"]] == ["BR-EP-1"]
    sessions = api.client.get(f"/api/v1/persons/{episode.person_id}/sessions?limit=3", headers=token).json()
    assert len(sessions["items"]) == 3 and {s["decision"] for s in sessions["items"]} <= {
        "pass",
        "fail",
        "review",
    }
    devices = api.client.get(f"/api/v1/persons/{episode.person_id}/devices", headers=token).json()
    assert devices["items"][0]["kind"] == "breathalyzer"
    assert api.client.get("/api/v1/persons/nobody/sessions", headers=token).status_code == 404
    assert api.client.get("/api/v1/persons?limit=0", headers=token).status_code == 422
    assert api.client.get("/api/v1/persons", headers=api.as_(Role.DEVICE)).status_code == 403


def test_review_queue_length_is_a_metric(api: Api, episode: SeededEpisode) -> None:
    from media_server.review_queue import pending_review_count

    with api.services.sessions() as db:
        expected = pending_review_count(db)
    assert expected >= 2
    text = api.client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("kuzet_review_queue_length ")]
    assert float(line.split()[1]) == expected


def test_episode_lists_the_retests_to_zero_linked(api: Api) -> None:
    seeded = seed_breath_episode(
        api.services, external_ref="EP-RT", display_name="Retest Person", retests=(0.012, 0.0)
    )
    assert 0.0 < ZERO_THRESHOLD_G_210L <= 0.012
    still, zero = seeded.retests
    login(api)
    html = api.client.get(f"/ws/sessions/{zero.session_id}?lang=en").text
    table = html.split('id="episode"')[1].split("</table>")[0]
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", table)
    # every test of the episode in order, each linked but the one on screen
    assert [re.search(r'href="/ws/sessions/([^?"]+)', r) for r in rows][-1] is None
    linked = [m.group(1) for r in rows if (m := re.search(r'href="/ws/sessions/([^?"]+)', r))]
    assert linked == [seeded.screening.session_id, seeded.confirmatory.session_id, still.session_id]
    stages = [re.sub(r"<[^>]*>", "", r.split("</td>")[0]) for r in rows]
    assert stages == ["screening", "confirmatory", "retest to zero", "retest to zero"]
    assert "0.012 g/210L" in rows[2] and "Violation" in rows[2]
    # back to zero: no violation (a reviewer still looks, as a seeded photo left the mouthpiece unsure)
    assert "0.000 g/210L" in rows[3] and "Needs review" in rows[3] and 'class="current-row"' in table
    # the episode is over: confirmed positive, no next test announced
    assert "<strong>confirmed positive</strong>" in table and "next:" not in table
    # from the screening test every retest is one click away, in Russian too
    ru = api.client.get(f"/ws/sessions/{seeded.screening.session_id}?lang=ru").text
    episode_ru = ru.split('id="episode"')[1].split("</table>")[0]
    for retest in seeded.retests:
        assert f'href="/ws/sessions/{retest.session_id}?lang=ru"' in episode_ru
    assert episode_ru.count("повторный до нуля") == 2


MOSCOW = ZoneInfo("Europe/Moscow")  # UTC+3 all year: two hours behind the agency's Asia/Almaty


def _in(zone: ZoneInfo, ts: datetime) -> str:
    return ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def test_pages_show_times_in_the_persons_own_zone(api: Api) -> None:
    seeded = seed_challenge_checkin(api.services, external_ref="TZ-MSK", display_name="Moscow Person")
    with api.services.sessions.begin() as db:
        person = db.get(Person, seeded.person_id)
        session = db.get(CheckSession, seeded.session_id)
        verdict = db.get(Verdict, seeded.verdict_id)
        assert person is not None and session is not None and verdict is not None
        person.timezone = "Europe/Moscow"
        started, decided = session.started_at, verdict.created_at
    assert started is not None
    almaty = ZoneInfo("Asia/Almaty")
    login(api)
    queue = api.client.get("/ws/queue?lang=en&person=TZ-MSK").text
    assert queue.count('class="queue-row"') == 1
    assert _in(MOSCOW, decided) in queue and _in(almaty, decided) not in queue
    page = api.client.get(f"/ws/sessions/{seeded.session_id}?lang=en").text
    assert _in(MOSCOW, started) in page and _in(MOSCOW, decided) in page
    assert " MSK" in page and not LOCAL_TIME.search(page)  # no time of the page is in Almaty's +05
    person_page = api.client.get(f"/ws/persons/{seeded.person_id}?lang=en").text
    assert _in(MOSCOW, started) in person_page and not LOCAL_TIME.search(person_page)
    assert "Europe/Moscow" in person_page


def test_person_page_shows_schedules_in_words_in_the_readers_language(api: Api) -> None:
    seeded = seed_challenge_checkin(api.services, external_ref="SCH-1", display_name="Scheduled Person")
    with api.services.sessions.begin() as db:
        person = db.get(Person, seeded.person_id)
        assert person is not None
        person.timezone = "Europe/Moscow"
    token = api.as_(Role.OFFICER)
    rules = [
        {"type": "daily", "start": "22:30", "end": "06:00", "days": [0, 1, 2, 3, 4]},
        {
            "type": "random",
            "per_week": 3,
            "earliest": "08:00",
            "latest": "20:00",
            "duration_min": 30,
            "days": [5, 6],
        },
        {"type": "on_demand"},
    ]
    for rule in rules:
        r = api.client.post(
            f"/api/v1/persons/{seeded.person_id}/schedules", headers=token, json={"rule": rule}
        )
        assert r.status_code == 201, r.text
    login(api)

    def schedules(lang: str) -> list[str]:
        html = api.client.get(f"/ws/persons/{seeded.person_id}?lang={lang}").text
        cell = html.split('id="schedules"')[1].split("</td>")[0]
        assert "{" not in cell and "type" not in cell  # no raw JSON
        return [re.sub(r"<[^>]*>", "", d) for d in re.findall(r"<div>(.*?)</div>", cell)]

    assert schedules("en") == [
        "Phone check-in: Monday to Friday, window 22:30–06:00 (ends the next day); local time, Europe/Moscow",
        "Phone check-in: random tests a week: 3, 30 min each, between 08:00 and 20:00; Sat, Sun; "
        "local time, Europe/Moscow",
        "Phone check-in: on demand: an officer asks for each test",
    ]
    ru = schedules("ru")
    assert "с понедельника по пятницу, окно 22:30–06:00 (заканчивается на следующий день)" in ru[0]
    assert ru[1].endswith(
        "случайных проверок в неделю: 3, по 30 мин, между 08:00 и 20:00; Сб, Вс; местное время, Europe/Moscow"
    )
    kk = schedules("kk")
    assert "аптасына кездейсоқ тексерулер саны: 3" in kk[1] and "Сб, Жс" in kk[1]
    assert "жергілікті уақыт, Europe/Moscow" in kk[0]
    # the API keeps the rule itself
    api.client.cookies.clear()
    body = api.client.get(f"/api/v1/persons/{seeded.person_id}", headers=token).json()
    assert [sc["rule"]["type"] for sc in body["schedules"]] == ["daily", "random", "on_demand"]
    assert {sc["timezone"] for sc in body["schedules"]} == {"Europe/Moscow"}


def test_unexpected_errors_and_wrong_methods_are_html_pages(
    api: Api, episode: SeededEpisode, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(api)
    # a wrong method, refused by routing before any workstation code runs
    wrong = api.client.delete("/ws/queue?lang=en")
    assert wrong.status_code == 405 and wrong.headers["content-type"].startswith("text/html")
    assert "This page does not take this kind of request" in wrong.text and 'id="error"' in wrong.text
    assert "GET" in wrong.headers["allow"]
    assert "Эта страница не принимает такой запрос" in api.client.put("/ws/persons?lang=ru").text

    def broken(*_: object) -> None:
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(workstation, "person_overview", broken)
    failed = api.client.get(f"/ws/persons/{episode.person_id}?lang=ru")
    assert failed.status_code == 500 and failed.headers["content-type"].startswith("text/html")
    assert "Ошибка на сервере" in failed.text and 'id="error"' in failed.text
    for leak in ("secret-internal-detail", "RuntimeError", "Traceback", "workstation.py"):
        assert leak not in failed.text, leak

    def gone(*_: object) -> None:
        raise HTTPException(404)

    monkeypatch.setattr(workstation, "person_overview", gone)
    missing = api.client.get(f"/ws/persons/{episode.person_id}?lang=en")
    assert missing.status_code == 404 and "There is no such session, person or file" in missing.text
    # the JSON API keeps JSON for a wrong method
    api.client.cookies.clear()
    api_wrong = api.client.delete("/api/v1/persons", headers=api.as_(Role.OFFICER))
    assert api_wrong.status_code == 405 and api_wrong.json()["error"] == "http_error"
