"""The episode clock: time moves open retest episodes on; missed or unconfirmed retests get a verdict."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.breath.episodes import _save_episode, episode_from_json
from media_server.breath.flow import now_utc
from media_server.breath.values import SYSTEM_ACTOR
from media_server.db import audit
from media_server.db.enums import SessionKind, SessionStatus
from media_server.db.models import BreathEpisode, CheckSession
from media_server.services import Services
from media_server.verdict import VerdictOutcome, announce, write_verdict
from sobriety.config import SobrietySettings
from sobriety.policy import (
    Action,
    ActionKind,
    Episode,
    EventKind,
    RetestEvent,
    next_state,
)

log = logging.getLogger("kuzet.breath")


@dataclass(frozen=True)
class EpisodeTick:
    """An open episode that time moved on: its new state, and the verdict booked for it (if any)."""

    episode_id: str
    person_id: str
    state: str
    session_id: str | None
    verdict_id: str | None
    outcome: VerdictOutcome | None


def _tick_episodes_sync(
    services: Services, now: datetime
) -> list[tuple[str, str, str | None, list[Action], Episode]]:
    settings: SobrietySettings = services.settings.sobriety
    changed = []
    with services.sessions.begin() as db:
        rows = db.scalars(select(BreathEpisode).where(BreathEpisode.closed_at.is_(None))).all()
        for row in rows:
            before = episode_from_json(row.episode)
            ep, actions = next_state(before, RetestEvent(EventKind.TICK, now), now, settings)
            if not actions and ep == before:
                continue
            _save_episode(row, ep, actions, None, now, "tick")
            audit.append(
                db,
                SYSTEM_ACTOR,
                "breath_episode_updated",
                "person",
                row.person_id,
                {
                    "episode_id": row.id,
                    "event": "tick",
                    "state": ep.state.value,
                    "actions": [a.code for a in actions],
                },
            )
            changed.append((row.id, row.person_id, row.last_session_id, actions, ep))
    return changed


def _open_booking_session(
    services: Services, person_id: str, episode_id: str, follows: str, ep: Episode, now: datetime
) -> str:
    """The session of a retest the episode expected and did not get (missed), audited."""
    with services.sessions.begin() as db:
        row = CheckSession(
            person_id=person_id,
            kind=SessionKind.BREATH,
            status=SessionStatus.MISSED,
            window_start=min(ep.due_at, now),
            window_end=min(ep.window_end, now),
            meta={"source": "episode_clock", "episode_id": episode_id, "follows": follows},
        )
        db.add(row)
        db.flush()
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_retest_booked",
            "session",
            row.id,
            {"episode_id": episode_id, "follows": follows, "state": ep.state.value},
        )
        return row.id


async def tick_episodes(services: Services, now: datetime) -> list[EpisodeTick]:
    """Advance every open breath episode to `now`: a missed or unconfirmed test gets its verdict booked.

    A result the state machine records (RECORD_RESULT) becomes a session of its own (the test that was
    not taken, linked to the episode and to the session it follows) with a check and a verdict through the
    normal policy, so it reaches the review queue and the webhook like any other; every session has at most
    one verdict.
    """
    out: list[EpisodeTick] = []
    for episode_id, person_id, session_id, actions, ep in await asyncio.to_thread(
        _tick_episodes_sync, services, now
    ):
        recorded = [a for a in actions if a.kind is ActionKind.RECORD_RESULT and a.outcome is not None]
        verdict_id = outcome = None
        if recorded and session_id is not None:
            checks = [
                CheckResult(
                    CheckKind.BREATH_READING,
                    a.outcome or Outcome.INCONCLUSIVE,
                    a.code,
                    a.message,
                    details={
                        "episode_id": episode_id,
                        "episode_state": ep.state.value,
                        "source": "episode_clock",
                    },
                )
                for a in recorded
            ]
            booked = await asyncio.to_thread(
                _open_booking_session, services, person_id, episode_id, session_id, ep, now
            )
            outcome, verdict_id = await asyncio.to_thread(
                write_verdict, services, booked, checks, [CheckKind.BREATH_READING]
            )
            announce(services, booked, person_id, "breath", outcome, verdict_id)
            session_id = booked
        out.append(EpisodeTick(episode_id, person_id, ep.state.value, session_id, verdict_id, outcome))
    return out


async def run_episode_clock(
    services: Services, every_s: float, is_leader: Callable[[], bool] | None = None
) -> None:
    """Tick breath episodes every `every_s` seconds until cancelled (the scheduler's leader only)."""
    while True:
        try:
            leader = True if is_leader is None else await asyncio.to_thread(is_leader)
            if leader:
                await tick_episodes(services, now_utc())
        except Exception:
            log.exception("breath episode tick failed; will retry")
        await asyncio.sleep(every_s)
