"""`checkin.flow.finish_session` on the real composition root (SQLite, local evidence), with the checks and
the gallery update replaced by fakes: the person's reply never waits for the adaptive-gallery update."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.checkin import flow
from media_server.checkin.checks import CheckinChecks
from media_server.db.enums import Decision, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Person, Verdict
from media_server.services import Services, build_services
from media_server.settings import Settings
from media_server.verdict import VerdictOutcome
from media_server.webrtc.capture import EndedReason, SessionCapture


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(data_dir=tmp_path / "var"))
    yield built
    built.engine.dispose()


def _capture(services: Services) -> SessionCapture:
    now = datetime.now(UTC)
    with services.sessions.begin() as db:
        person = Person(external_ref="case-flow", display_name="Flow Test")
        db.add(person)
        db.flush()
        row = CheckSession(
            person_id=person.id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.ACTIVE,
            window_start=now,
            window_end=now + timedelta(minutes=5),
        )
        db.add(row)
        db.flush()
        person_id, session_id = person.id, row.id
    rng = np.random.default_rng(0)
    return SessionCapture(
        session_id=session_id,
        person_id=person_id,
        kind="checkin",
        device_id=None,
        challenge=None,
        recording_path=None,
        frames=[(0.1 * i, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for i in range(4)],
        audio_pcm16k=np.zeros(16000, dtype=np.float32),
        audio_t0_s=0.0,
        events=[],
        location={"status": "denied", "reason": "user"},
        ended_reason=EndedReason.COMPLETED,
        started_at=now,
        ended_at=now,
        stats={},
    )


async def test_the_reply_is_returned_before_the_gallery_update_ends(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    passed = [
        CheckResult(CheckKind.FACE, Outcome.PASS, "match", "Face matches."),
        CheckResult(CheckKind.PAD, Outcome.PASS, "live", "Live face."),
    ]

    async def checks(_services: Services, _capture: SessionCapture) -> CheckinChecks:
        return CheckinChecks(passed, [CheckKind.FACE, CheckKind.PAD], [])

    release = asyncio.Event()
    gallery_saw: list[VerdictOutcome] = []

    async def slow_gallery(
        _services: Services, _capture: SessionCapture, _results: list[CheckResult], outcome: VerdictOutcome
    ) -> str | None:
        await release.wait()  # a face enrolment job that has not finished
        gallery_saw.append(outcome)
        return None

    monkeypatch.setattr(flow, "run_checkin_checks", checks)
    monkeypatch.setattr(flow, "adapt_gallery", slow_gallery)
    capture = _capture(services)

    # Awaiting the gallery update would never end here (nothing sets `release` yet).
    reply = await asyncio.wait_for(flow.finish_session(services, capture), timeout=30)

    assert reply["decision"] == "pass" and reply["session_id"] == capture.session_id
    with services.sessions() as db:
        [verdict] = db.scalars(select(Verdict).where(Verdict.session_id == capture.session_id)).all()
        assert verdict.decision is Decision.PASS  # judged and stored before the reply
    [follow_up] = services.background  # tracked until it ends
    assert not follow_up.done() and gallery_saw == []
    release.set()
    await asyncio.wait_for(follow_up, timeout=30)
    assert [o.decision for o in gallery_saw] == [Decision.PASS]
    assert services.background == []
