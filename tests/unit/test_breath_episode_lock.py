"""Two breath tests of one person submitted at once are judged one after the other, never at the same
episode stage: `breath.episodes.judge_reading_and_advance` reads the stage, judges and advances in one
locked transaction. On SQLite and on PostgreSQL (the `empty_db_url` backends of tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from identity.checks import CheckResult
from media_server.breath.episodes import context_of, judge_reading_and_advance
from media_server.breath.values import BreathContext
from media_server.db.enums import SessionKind, SessionStatus
from media_server.db.models import BreathEpisode, CheckSession, Person
from media_server.services import Services, build_services
from media_server.settings import DatabaseSettings, Settings
from sobriety.policy import TestStage
from sobriety.reading import BreathReading
from sobriety.units import AlcoholUnit

# How long each judgement holds its transaction open: ample time for the other to read the same stage if
# nothing serialised them.
HOLD_S = 0.5


@pytest.fixture()
def services(empty_db_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(data_dir=tmp_path / "var", database=DatabaseSettings(url=empty_db_url)))
    yield built
    built.engine.dispose()


def _reading(person_ref: str, brac: float, at: datetime, nonce: str) -> BreathReading:
    return BreathReading(
        device_serial="BR-lock",
        person_id=person_ref,
        brac=brac,
        unit=AlcoholUnit.G_210L,
        calibrated_on=date(2026, 11, 1),
        blow_start=at - timedelta(seconds=6),
        blow_end=at - timedelta(seconds=2),
        photo_times=[at - timedelta(seconds=4)],
        nonce=nonce,
        timestamp=at,
    )


def _person_with_breath_sessions(
    services: Services, ref: str, n: int, t0: datetime
) -> tuple[str, list[str], BreathContext]:
    """A person with `n` active breath sessions open from `t0`, and the reading context of that person."""
    with services.sessions.begin() as db:
        person = Person(external_ref=ref, display_name="Lock Test")
        db.add(person)
        db.flush()
        sessions = [
            CheckSession(
                person_id=person.id,
                kind=SessionKind.BREATH,
                status=SessionStatus.ACTIVE,
                window_start=t0,
                window_end=t0 + timedelta(hours=2),
            )
            for _ in range(n)
        ]
        db.add_all(sessions)
        db.flush()
        return person.id, [s.id for s in sessions], context_of(person, None, services.settings.sobriety)


def test_two_tests_at_once_are_not_judged_at_the_same_stage(services: Services) -> None:
    sob = services.settings.sobriety
    t0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
    person_id, (first, *together), context = _person_with_breath_sessions(services, "case-lock", 3, t0)

    # A positive screening: the episode now waits for a confirmatory test after the deprivation period.
    over = sob.default_limit_g_210l * 5
    _, stage, check = judge_reading_and_advance(
        services,
        person_id,
        first,
        _reading("case-lock", over, t0, "nonce-first-0001"),
        context,
        lambda _c: True,
        t0,
    )
    assert stage is TestStage.SCREENING and check.code == "screening_positive"

    # Two negative readings in the confirmatory window, judged at the same time.
    t1 = t0 + timedelta(seconds=sob.deprivation_s + 60)
    start = threading.Barrier(2)

    def judge(session_id: str, nonce: str) -> TestStage:
        def used(_check: CheckResult) -> bool:
            time.sleep(HOLD_S)  # inside the transaction that read the stage
            return True

        start.wait()
        _, judged_at, _ = judge_reading_and_advance(
            services, person_id, session_id, _reading("case-lock", 0.0, t1, nonce), context, used, t1
        )
        return judged_at

    with ThreadPoolExecutor(2) as pool:
        stages = list(pool.map(judge, together, ["nonce-together-a", "nonce-together-b"]))

    # The first closes the episode as negative at the confirmatory stage; the second, judged after it,
    # opens a new episode and is a screening. Unserialised, both would have been confirmatory.
    assert sorted(stages) == [TestStage.CONFIRMATORY, TestStage.SCREENING]
    with services.sessions() as db:
        episodes = db.scalars(select(BreathEpisode).order_by(BreathEpisode.created_at)).all()
        assert [e.state for e in episodes] == ["negative", "negative"]


def test_two_first_tests_at_once_open_one_episode(services: Services) -> None:
    """With no episode open there is no row to lock: the person's episodes are locked as a whole (an
    advisory lock on PostgreSQL), so the second test finds the episode the first one opened."""
    sob = services.settings.sobriety
    t0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
    person_id, ids, context = _person_with_breath_sessions(services, "case-first", 2, t0)

    over = sob.default_limit_g_210l * 5
    start = threading.Barrier(2)

    def judge(session_id: str, nonce: str) -> TestStage:
        def used(_check: CheckResult) -> bool:
            time.sleep(HOLD_S)
            return True

        start.wait()
        _, judged_at, _ = judge_reading_and_advance(
            services, person_id, session_id, _reading("case-first", over, t0, nonce), context, used, t0
        )
        return judged_at

    with ThreadPoolExecutor(2) as pool:
        stages = list(pool.map(judge, ids, ["nonce-first-a-0001", "nonce-first-b-0001"]))

    # One positive screening opened the episode; the other was judged against it, not as a second screening.
    assert stages.count(TestStage.SCREENING) == 1, stages
    with services.sessions() as db:
        episodes = db.scalars(select(BreathEpisode).where(BreathEpisode.person_id == person_id)).all()
        assert len(episodes) == 1
