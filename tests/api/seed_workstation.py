"""Richer workstation data through the real database and store: a challenge check-in, a breath episode.

Builds on tests/api/seed.py (same media, same store and audit writes, the real verdict policy). The
check results carry the codes and details the real engines write (identity.liveness.checks,
sobriety.photos, sobriety.policy), so the pages render what production sessions show.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.db.enums import ArtifactKind, DeviceKind, SessionKind, SessionStatus
from media_server.db.models import BreathEpisode, CheckResultRecord, CheckSession, Device, Verdict
from media_server.db.types import utcnow
from media_server.verdict import decide
from sobriety.config import SobrietySettings
from tests.api.seed import (
    FACE_THRESHOLD,
    PAD_LIVE_SCORE,
    PAD_THRESHOLD,
    SeededSession,
    _finish,
    _person,
    _stamp,
    _store,
    seed_media,
)

DIGITS = "37194"
# Prompt times on the session clock (s); the seeded recording starts at session time RECORDING_T0_S.
RECORDING_T0_S = 0.2
# One stretch of video lost on the network (a recording_gap event as the remuxing recorder writes it).
GAP: dict[str, Any] = {
    "type": "recording_gap",
    "kind": "video",
    "cause": "network_loss",
    "t_s": 1.5,
    "media_t_s": 1.3,
    "packets_missing": 9,
    "packets_discarded": 0,
    "frames_missing": 4,
    "seconds": 0.167,
}
PROMPTS = (("turn_left", 0.6, ""), ("read_digits", 1.4, DIGITS), ("blink", 2.3, ""))
STEP_WINDOW_S = 0.6
ORDER_LIMIT_G_210L = 0.02
SCREENING_BRAC = 0.045
CONFIRMATORY_BRAC = 0.041
# The limit of 'test to zero' retests (sobriety.policy.evaluate_reading judges them against it).
ZERO_THRESHOLD_G_210L = SobrietySettings().zero_threshold_g_210l


def seed_challenge_checkin(
    services: Any, *, external_ref: str = "SEED-C", display_name: str = "Challenge Person"
) -> SeededSession:
    """A check-in whose head turn went the wrong way (FAIL) while face, PAD, lips and blink passed."""
    media = seed_media()
    now = utcnow()
    with services.sessions.begin() as db:
        person = _person(db, external_ref, display_name)
        steps = [
            {"kind": kind, "prompt_key": f"liveness.{kind}", "window_s": STEP_WINDOW_S, "digits": digits}
            for kind, _, digits in PROMPTS
        ]
        session = CheckSession(
            person_id=person.id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.COMPLETED,
            window_start=now - timedelta(minutes=20),
            window_end=now + timedelta(minutes=10),
            started_at=now - timedelta(minutes=3),
            ended_at=now - timedelta(minutes=3) + timedelta(seconds=4),
            location={"status": "ok", "lat": 51.1694, "lon": 71.4491, "accuracy_m": 12},
            challenge={"nonce": "5eed5eed5eed5eed", "lead_in_s": 0.6, "gap_s": 0.2, "steps": steps},
            meta={"seeded": True},
        )
        db.add(session)
        db.flush()
        artifacts = [
            _store(
                services,
                db,
                session.id,
                ArtifactKind.RECORDING,
                media.recording_webm,
                "video/webm",
                {
                    "ended_reason": "completed",
                    "t0_s": RECORDING_T0_S,
                    "format": "webm",
                    "codecs": {"video": "vp8", "audio": "opus"},
                    "gaps": 1,
                    "gaps_by_cause": {"video:network_loss": 1},
                    "frames_missing": {"video": GAP["frames_missing"], "audio": 0},
                    "gap_list": [GAP],
                },
            )
        ]
        frame_rows = []
        for i, frame in enumerate(media.frames):
            distance = round(0.015 + 0.002 * i, 4)
            frame_rows.append(
                {
                    "index": i,
                    "duplicate_of": None,
                    "quality": "quality_ok" if i else "too_dark",
                    "distance": distance,
                }
            )
            artifacts.append(
                _store(
                    services,
                    db,
                    session.id,
                    ArtifactKind.FRAME,
                    frame.jpeg,
                    "image/jpeg",
                    {
                        "t_s": frame.t_s + RECORDING_T0_S,
                        "frame_index": i,
                        "score": distance,
                        "display_w": 240,
                        "boxes": [{**frame.box, "match": i > 0}],
                    },
                )
            )
        liveness = [
            CheckResult(
                CheckKind.LIVENESS,
                Outcome.FAIL,
                "wrong_direction",
                "The head turned the other way.",
                score=-2.22,
                threshold=15.0,
                details={
                    "direction": "left",
                    "prompt_ts": PROMPTS[0][1],
                    "window_s": STEP_WINDOW_S,
                    "score_unit": "degrees",
                    "baseline_deg": 1.4,
                    "frames": 9,
                    "opposite_deg": 17.8,
                    "step": 0,
                    "step_kind": "turn_left",
                },
            ),
            CheckResult(
                CheckKind.AV_SYNC,
                Outcome.PASS,
                "av_in_sync",
                "Lip movement matches the speech.",
                score=0.62,
                threshold=0.35,
                details={
                    "score_unit": "Pearson r",
                    "lag_s": 0.04,
                    "step": 1,
                    "step_kind": "read_digits",
                    "prompt_ts": PROMPTS[1][1],
                    "digits": DIGITS,
                },
            ),
            CheckResult(
                CheckKind.LIVENESS,
                Outcome.PASS,
                "blink",
                "Blink seen.",
                score=0.41,
                threshold=0.6,
                details={
                    "prompt_ts": PROMPTS[2][1],
                    "window_s": STEP_WINDOW_S,
                    "score_unit": "EAR / open-eye EAR",
                    "response_latency_s": 0.35,
                    "step": 2,
                    "step_kind": "blink",
                },
            ),
        ]
        checks = [
            CheckResult(
                CheckKind.FACE,
                Outcome.PASS,
                "match",
                "Face matches the enrolled person.",
                score=0.0172,
                threshold=0.0688,
                model=_stamp("dlib_resnet_face_v1"),
                details={
                    "score_unit": "cosine_distance",
                    "fail_above": 0.52,
                    "frames": frame_rows,
                    "fused_from": [1, 2],
                },
            ),
            CheckResult(
                CheckKind.PAD,
                Outcome.PASS,
                "live",
                "The face looks like a live person.",
                score=PAD_LIVE_SCORE,
                threshold=PAD_THRESHOLD,
                model=_stamp("minifasnet_v2_2.7"),
                details={"score_unit": "fused MiniFASNet live probability (0..1)"},
            ),
            CheckResult(
                CheckKind.SPOKEN_DIGITS,
                Outcome.INCONCLUSIVE,
                "words_not_recognised",
                "The digits' words were not recognised.",
                details={"digits": [DIGITS]},
            ),
            *liveness,
        ]
        return _finish(
            services,
            db,
            session,
            person,
            artifacts,
            checks,
            [CheckKind.FACE, CheckKind.PAD, CheckKind.LIVENESS, CheckKind.AV_SYNC],
        )


@dataclass(frozen=True)
class SeededEpisode:
    """An earlier negative test, then a positive screening, its confirmatory test and any retests to zero."""

    person_id: str
    person_name: str
    episode_id: str
    earlier: SeededSession
    screening: SeededSession
    confirmatory: SeededSession
    retests: list[SeededSession] = field(default_factory=list)


def _reading(person_id: str, brac: float, at: datetime, n_photos: int) -> dict[str, Any]:
    """A reading shaped like sobriety.reading.BreathReading (JSON)."""
    return {
        "device_serial": "BR-EPISODE-1",
        "person_id": person_id,
        "brac": brac,
        "unit": "g/210L",
        "calibrated_on": (at - timedelta(days=40)).date().isoformat(),
        "blow_start": at.isoformat(),
        "blow_end": (at + timedelta(seconds=4.5)).isoformat(),
        "photo_times": [(at + timedelta(seconds=1 + 1.5 * i)).isoformat() for i in range(n_photos)],
        "nonce": f"n{int(at.timestamp())}abcdef",
        "timestamp": (at + timedelta(seconds=5)).isoformat(),
    }


def _photo_checks(i: int) -> list[dict[str, Any]]:
    mouthpiece = (
        CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.PASS,
            "mouthpiece_visible",
            "Something that is not skin covers the mouth.",
            score=0.31,
            threshold=0.12,
            details={"score_unit": "fraction of lower-face pixels unlike skin", "method": "heuristic"},
        )
        if i != 1
        else CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.INCONCLUSIVE,
            "mouthpiece_not_visible",
            "No mouthpiece seen.",
            score=0.04,
            threshold=0.12,
            details={"score_unit": "fraction of lower-face pixels unlike skin", "method": "heuristic"},
        )
    )
    identity = CheckResult(
        CheckKind.FACE,
        Outcome.PASS,
        "match",
        "Face matches the enrolled person.",
        score=0.41,
        threshold=0.5,
        details={"score_unit": "embedding distance", "reject_distance": 0.62},
    )
    return [mouthpiece.to_dict(), identity.to_dict()]


def _breath_session(
    services: Any,
    db: Any,
    person: Any,
    at: datetime,
    brac: float,
    stage: str,
    episode_id: str | None,
    reuse_of: list[str] | None = None,
) -> SeededSession:
    media = seed_media()
    session = CheckSession(
        person_id=person.id,
        kind=SessionKind.BREATH,
        status=SessionStatus.COMPLETED,
        window_start=at - timedelta(minutes=15),
        window_end=at + timedelta(minutes=15),
        started_at=at,
        ended_at=at + timedelta(seconds=6),
        meta={"seeded": True, "stage": stage, **({"episode_id": episode_id} if episode_id else {})},
        created_at=at,
    )
    db.add(session)
    db.flush()
    reading = _reading(person.id, brac, at, len(media.photos))
    artifacts = [
        _store(
            services,
            db,
            session.id,
            ArtifactKind.READING,
            json.dumps(reading, sort_keys=True).encode(),
            "application/json",
            {"what": "breath_reading"},
        )
    ]
    photos = []
    for i, photo in enumerate(media.photos):
        row = _store(
            services,
            db,
            session.id,
            ArtifactKind.PHOTO,
            photo,
            "image/jpeg",
            {"what": "breath_photo", "field": f"photo_{i}", "index": i, "checks": _photo_checks(i)},
        )
        row.created_at = at + timedelta(seconds=1 + 1.5 * i)
        artifacts.append(row)
        photos.append(row)
    retest = stage == "test_to_zero"
    limit = ZERO_THRESHOLD_G_210L if retest else ORDER_LIMIT_G_210L
    if brac < limit:
        code, outcome = ("returned_to_zero" if retest else "below_limit"), Outcome.PASS
    elif stage == "screening":
        code, outcome = "screening_positive", Outcome.INCONCLUSIVE
    else:
        code, outcome = ("still_positive" if retest else "confirmed_positive"), Outcome.FAIL
    reuse_details: dict[str, Any] = {
        "score_unit": "pHash Hamming distance (64 bits)",
        "exact": [],
        "near": [],
    }
    if reuse_of:
        reuse_details["near"] = [
            {
                "photo_id": photos[0].id,
                "earlier_photo_id": reuse_of[0],
                "earlier_test_id": None,
                "distance": 3,
            }
        ]
    checks = [
        CheckResult(CheckKind.BREATH_SIGNATURE, Outcome.PASS, "signature_valid", "Signature verified."),
        CheckResult(
            CheckKind.BREATH_READING,
            outcome,
            code,
            f"Reading {brac:.3f} g/210L against the limit {limit:.3f}.",
            score=brac,
            threshold=limit,
            details={"score_unit": "g/210L", "stage": stage, "brac": brac, "brac_unit": "g/210L"},
        ),
        CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.INCONCLUSIVE,
            "mouthpiece_not_visible",
            "The mouthpiece is visible in 2 of 3 photos.",
        ),
        CheckResult(
            CheckKind.PHOTO_REUSE,
            Outcome.INCONCLUSIVE if reuse_of else Outcome.PASS,
            "photo_near_duplicate" if reuse_of else "photos_new",
            "A photo is a near-duplicate of one from an earlier test."
            if reuse_of
            else "No photo was seen before.",
            score=3.0 if reuse_of else None,
            threshold=6.0,
            details=reuse_details,
        ),
        # identity under the mouthpiece: a positive reading is the person's only when the face matched
        CheckResult(
            CheckKind.FACE,
            Outcome.PASS,
            "match",
            "The face in the photos matches the enrolled person.",
            score=0.31,
            threshold=0.37,
            details={"score_unit": "face distance"},
        ),
    ]
    seeded = _finish(
        services,
        db,
        session,
        person,
        artifacts,
        checks,
        [CheckKind.BREATH_SIGNATURE, CheckKind.BREATH_READING, CheckKind.BREATH_PHOTO],
    )
    db.query(Verdict).filter(Verdict.id == seeded.verdict_id).update(
        {"created_at": at + timedelta(seconds=8)}
    )
    return seeded


def seed_breath_episode(
    services: Any,
    *,
    external_ref: str = "SEED-E",
    display_name: str = "Episode Person",
    retests: Sequence[float] = (),
) -> SeededEpisode:
    """A person under a 0.020 g/210L order: a negative test two days ago, then screening and confirmatory.

    `retests` are the BrAC readings (g/210L) of 'test to zero' retests after the confirmed positive, spread
    between the confirmatory test and now; a last one below the zero threshold closes the episode.
    """
    now = utcnow().astimezone(UTC)
    with services.sessions.begin() as db:
        person = _person(db, external_ref, display_name)
        person.order_brac_limit = ORDER_LIMIT_G_210L
        person.order_brac_unit = "g/210L"
        db.add(Device(serial=f"BR-{external_ref}", kind=DeviceKind.BREATHALYZER, person_id=person.id))
        earlier = _breath_session(services, db, person, now - timedelta(days=2), 0.0, "screening", None)
        episode = BreathEpisode(
            person_id=person.id,
            state="positive",
            stage="test_to_zero",
            due_at=now + timedelta(hours=1),
            window_end=now + timedelta(hours=2),
            episode={},
            history=[],
        )
        db.add(episode)
        db.flush()
        screening = _breath_session(
            services, db, person, now - timedelta(minutes=40), SCREENING_BRAC, "screening", episode.id
        )
        confirmatory = _breath_session(
            services,
            db,
            person,
            now - timedelta(minutes=20),
            CONFIRMATORY_BRAC,
            "confirmatory",
            episode.id,
            reuse_of=earlier.artifacts[ArtifactKind.PHOTO][:1],
        )
        episode.history = [
            {
                "at": (now - timedelta(minutes=40)).isoformat(),
                "event": "positive",
                "session_id": screening.session_id,
            },
            {
                "at": (now - timedelta(minutes=20)).isoformat(),
                "event": "positive",
                "session_id": confirmatory.session_id,
            },
        ]
        seeded_retests = []
        for i, brac in enumerate(retests):
            at = now - timedelta(minutes=20) + (i + 1) * timedelta(minutes=20) / (len(retests) + 1)
            retest = _breath_session(services, db, person, at, brac, "test_to_zero", episode.id)
            seeded_retests.append(retest)
            event = "positive" if brac >= ZERO_THRESHOLD_G_210L else "negative"
            episode.history = [
                *episode.history,
                {"at": at.isoformat(), "event": event, "session_id": retest.session_id},
            ]
            if event == "negative":
                episode.closed_at = at
        episode.first_session_id = screening.session_id
        last = seeded_retests[-1] if seeded_retests else confirmatory
        episode.last_session_id = last.session_id
        return SeededEpisode(
            person.id, person.display_name, episode.id, earlier, screening, confirmatory, seeded_retests
        )


def seed_checkin_history(services: Any, person_id: str, days: int = 6) -> None:
    """Past check-ins of a person, one or two a day, with verdicts from the real policy (no media)."""
    now = utcnow()
    with services.sessions.begin() as db:
        for day in range(days, 0, -1):
            for n in range(1 + day % 2):
                at = now - timedelta(days=day, hours=3 * n)
                session = CheckSession(
                    person_id=person_id,
                    kind=SessionKind.CHECKIN,
                    status=SessionStatus.COMPLETED,
                    window_start=at - timedelta(minutes=10),
                    window_end=at + timedelta(minutes=20),
                    started_at=at,
                    ended_at=at + timedelta(seconds=20),
                    meta={"seeded": True},
                    created_at=at,
                )
                db.add(session)
                db.flush()
                variant = (day + n) % 4
                outcome_, code, score = {
                    0: (Outcome.INCONCLUSIVE, "borderline", 0.41),
                    3: (Outcome.FAIL, "mismatch", 0.6),
                }.get(variant, (Outcome.PASS, "match", 0.3))
                face = CheckResult(
                    CheckKind.FACE,
                    outcome_,
                    code,
                    "history",
                    score=score,
                    threshold=FACE_THRESHOLD,
                    details={"score_unit": "cosine_distance"},
                )
                outcome = decide([face], [CheckKind.FACE])
                db.add(CheckResultRecord.from_check(session.id, face))
                db.add(
                    Verdict(
                        session_id=session.id,
                        decision=outcome.decision,
                        reasons=outcome.reasons,
                        retake_offered=False,
                        policy_version=outcome.policy_version,
                        manifest_sha256="0" * 64,
                        created_at=at + timedelta(seconds=30),
                    )
                )
