"""The session pipeline's evidence-first storage, verdict writing and PAD fusion (real SQLite + store)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.pad.config import PadSettings
from media_server.checkin.checks import fuse_pad
from media_server.checkin.evidence import store_capture_evidence
from media_server.checkin.flow import count_recording, finish_session
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, SessionKind, SessionStatus
from media_server.db.models import Artifact, AuditEntry, CheckResultRecord, CheckSession, Person, Verdict
from media_server.verdict import write_verdict
from media_server.webrtc.capture import EndedReason, SessionCapture
from tests.api.conftest import Api

STAMP = ModelStamp("minifasnet", "1.0", "cd" * 32)


def _session(api: Api) -> tuple[str, str]:
    now = datetime.now(UTC)
    with api.services.sessions.begin() as db:
        person = Person(external_ref="P-pipe", display_name="Pipe")
        db.add(person)
        db.flush()
        row = CheckSession(
            person_id=person.id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.ACTIVE,
            window_start=now,
            window_end=now + timedelta(minutes=5),
            meta={},
        )
        db.add(row)
        db.flush()
        return person.id, row.id


def _capture(person_id: str, session_id: str, recording: Path | None, reason: EndedReason) -> SessionCapture:
    rng = np.random.default_rng(0)
    frames = [(0.1 * i, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for i in range(30)]
    now = datetime.now(UTC)
    return SessionCapture(
        session_id=session_id,
        person_id=person_id,
        kind="checkin",
        device_id=None,
        challenge=None,
        recording_path=recording,
        frames=frames,
        audio_pcm16k=np.zeros(16000, dtype=np.float32),
        audio_t0_s=0.0,
        events=[{"type": "ack", "t_s": 1.0}],
        location={"status": "denied", "reason": "user"},
        ended_reason=reason,
        started_at=now,
        ended_at=now,
        stats={"video_frames_received": 30},
    )


def test_evidence_is_stored_and_hash_verified_before_judging(api: Api, tmp_path: Path) -> None:
    person_id, session_id = _session(api)
    recording = tmp_path / "rec.mp4"
    recording.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4096))
    refs = store_capture_evidence(
        api.services, _capture(person_id, session_id, recording, EndedReason.CONNECTION_FAILED)
    )
    kinds = [r.kind for r in refs]
    assert kinds.count(ArtifactKind.RECORDING) == 1 and kinds.count(ArtifactKind.AUDIO) == 1
    assert kinds.count(ArtifactKind.FRAME) == 12  # evenly spread evidence frames
    for ref in refs:
        assert hashlib.sha256(api.services.store.get_bytes(ref.key)).hexdigest() == ref.sha256
    with api.services.sessions() as db:
        row = db.get(CheckSession, session_id)
        assert row is not None and row.status is SessionStatus.TECHNICAL_FAILURE
        assert row.location == {"status": "denied", "reason": "user"}
        assert len(db.scalars(select(Artifact).where(Artifact.session_id == session_id)).all()) == len(refs)


def test_recording_format_gaps_and_their_metrics_are_stored(api: Api, tmp_path: Path) -> None:
    person_id, session_id = _session(api)
    recording = tmp_path / "session.webm"
    recording.write_bytes(b"\x1aE\xdf\xa3" + bytes(4096))
    gap = {
        "type": "recording_gap",
        "kind": "video",
        "cause": "network_loss",
        "t_s": 2.5,
        "media_t_s": 2.1,
        "packets_missing": 12,
        "packets_discarded": 0,
        "frames_missing": 5,
        "seconds": 0.2,
    }
    meta = {
        "format": "webm",
        "codecs": {"video": "vp8", "audio": "opus"},
        "t0_s": 0.4,
        "gaps": 1,
        "gaps_by_cause": {"video:network_loss": 1},
        "frames_missing": {"video": 5, "audio": 0},
        "gap_list": [gap],
    }
    base = _capture(person_id, session_id, recording, EndedReason.COMPLETED)
    capture = dataclasses.replace(
        base,
        events=[*base.events, gap],
        recording_meta=meta,
        stats={
            **base.stats,
            "recording_gaps": 1,
            "recording_video_frames_missing": 5,
            "recording_cpu_ms": 40,
        },
    )
    refs = store_capture_evidence(api.services, capture)
    count_recording(api.services, capture)
    (rec,) = [r for r in refs if r.kind is ArtifactKind.RECORDING]
    with api.services.sessions() as db:
        row = db.get(Artifact, rec.artifact_id)
        assert row is not None and row.content_type == "video/webm"
        assert (
            row.meta["gap_list"] == [gap]
            and row.meta["t0_s"] == 0.4
            and row.meta["ended_reason"] == "completed"
        )
        (events_row,) = [
            a
            for a in db.scalars(select(Artifact).where(Artifact.session_id == session_id))
            if (a.meta or {}).get("what") == "session_events"
        ]
        stored = json.loads(api.services.store.get_bytes(events_row.key))
    assert gap in stored["events"] and stored["stats"]["recording_gaps"] == 1
    metrics = api.client.get("/metrics").text
    assert 'kuzet_recording_gaps_total{cause="network_loss",kind="video"} 1.0' in metrics
    assert 'kuzet_recording_frames_missing_total{kind="video"} 5.0' in metrics
    assert 'kuzet_recording_cpu_seconds_total{format="webm"} 0.04' in metrics


def _metric(text: str, sample: str) -> float:
    """The value of one sample line of a /metrics answer (0 when the series is not there yet)."""
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0]) if found else 0.0


def test_a_judged_session_counts_how_it_ended_and_its_dropped_frames_in_the_metrics(api: Api) -> None:
    person_id, session_id = _session(api)
    base = _capture(person_id, session_id, None, EndedReason.CONNECTION_FAILED)
    # No frames or audio: the checks have nothing to run an engine on (a dropped connection).
    capture = dataclasses.replace(
        base,
        frames=[],
        audio_pcm16k=np.zeros(0, dtype=np.float32),
        audio_t0_s=None,
        stats={**base.stats, "recorder_dropped": 3, "frames_analysis_dropped": 7},
    )
    ended = 'kuzet_webrtc_sessions_ended_total{reason="connection_failed"}'
    series = (ended, "kuzet_recording_frames_dropped_total", "kuzet_live_analysis_frames_dropped_total")
    before = api.client.get("/metrics").text
    reply = api.client.portal.call(finish_session, api.services, capture)  # type: ignore[union-attr]
    assert reply["decision"] == "review" and reply["retake"] is True
    after = api.client.get("/metrics").text
    assert [_metric(after, s) - _metric(before, s) for s in series] == [1.0, 3.0, 7.0]
    assert _metric(after, 'kuzet_webrtc_sessions_ended_total{reason="completed"}') == 0.0


def test_verdict_is_written_with_a_signed_manifest_and_audited(api: Api) -> None:
    person_id, session_id = _session(api)
    store_capture_evidence(api.services, _capture(person_id, session_id, None, EndedReason.COMPLETED))
    results = [
        CheckResult(
            CheckKind.FACE, Outcome.PASS, "match", "Face matches.", score=0.3, threshold=0.5, model=STAMP
        ),
        CheckResult(
            CheckKind.PAD,
            Outcome.FAIL,
            "presentation_attack",
            "Photo of a photo.",
            score=0.1,
            threshold=0.55,
            model=STAMP,
        ),
        CheckResult(CheckKind.LOCATION, Outcome.INCONCLUSIVE, "location_missing", "No location."),
    ]
    outcome, verdict_id = write_verdict(api.services, session_id, results, [CheckKind.FACE, CheckKind.PAD])
    assert outcome.decision is Decision.FAIL
    assert any(r.startswith("note: location") for r in outcome.reasons)  # advisory only
    with api.services.sessions() as db:
        verdict = db.get(Verdict, verdict_id)
        assert verdict is not None and verdict.thresholds["pad.presentation_attack"] == 0.55
        stored = db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == session_id)).all()
        assert {c.kind for c in stored} == {CheckKind.FACE, CheckKind.PAD, CheckKind.LOCATION}
        manifest_row = db.scalars(
            select(Artifact).where(
                Artifact.session_id == session_id, Artifact.sha256 == verdict.manifest_sha256
            )
        ).one()
        assert audit.verify_chain(db).ok
    manifest_bytes = api.services.store.get_bytes(manifest_row.key)
    manifest = json.loads(manifest_bytes)
    assert manifest["verdict"]["decision"] == "fail" and len(manifest["artifacts"]) >= 13
    signature = __import__("base64").b64decode(manifest_row.meta["ed25519_signature_b64"])
    api.services.signing_key.public_key().verify(signature, manifest_bytes)


def test_technical_failure_is_review_with_retake_not_fail(api: Api) -> None:
    person_id, session_id = _session(api)
    results = [
        CheckResult(CheckKind.MEDIA, Outcome.TECHNICAL, "connection_failed", "Dropped."),
        CheckResult(CheckKind.FACE, Outcome.FAIL, "mismatch", "Different person.", score=0.9, threshold=0.5),
    ]
    outcome, _ = write_verdict(api.services, session_id, results, [CheckKind.FACE])
    assert outcome.decision is Decision.REVIEW and outcome.retake_offered


def test_a_session_judged_twice_keeps_its_first_verdict(api: Api) -> None:
    """A redelivered job or a recovery sweep judging again gets the first verdict back (UNIQUE constraint)."""
    _, session_id = _session(api)
    first_results = [CheckResult(CheckKind.FACE, Outcome.PASS, "match", "Face matches.", 0.3, 0.5, STAMP)]
    again_results = [CheckResult(CheckKind.FACE, Outcome.FAIL, "mismatch", "Different.", 0.9, 0.5, STAMP)]
    first, first_id = write_verdict(api.services, session_id, first_results, [CheckKind.FACE])
    again, again_id = write_verdict(api.services, session_id, again_results, [CheckKind.FACE])
    assert again_id == first_id and again.decision is first.decision is Decision.PASS
    with api.services.sessions() as db:
        assert len(db.scalars(select(Verdict).where(Verdict.session_id == session_id)).all()) == 1
        written = db.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "verdict_written", AuditEntry.subject_id == session_id
            )
        ).all()
        assert len(written) == 1
        assert (
            len(db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == session_id)).all())
            == 1
        )


def _pad(outcome: Outcome, score: float) -> CheckResult:
    return CheckResult(CheckKind.PAD, outcome, outcome.value, "x", score=score, threshold=0.55, model=STAMP)


def test_pad_fusion_majority_rule() -> None:
    pad = PadSettings()  # a frame PASSes at >= 0.90, FAILs below 0.20
    assert fuse_pad([], pad).outcome is Outcome.INCONCLUSIVE
    assert fuse_pad([_pad(Outcome.PASS, 0.95)] * 3, pad).outcome is Outcome.PASS
    attack = fuse_pad([_pad(Outcome.FAIL, 0.1), _pad(Outcome.FAIL, 0.05), _pad(Outcome.PASS, 0.95)], pad)
    assert attack.outcome is Outcome.FAIL and attack.code == "presentation_attack"
    assert attack.score == 0.1
    assert fuse_pad([_pad(Outcome.FAIL, 0.1), _pad(Outcome.PASS, 0.9)], pad).outcome is Outcome.INCONCLUSIVE
    tech = CheckResult(CheckKind.PAD, Outcome.TECHNICAL, "engine_failure", "x")
    assert fuse_pad([tech, tech], pad).outcome is Outcome.TECHNICAL


def test_pad_fusion_one_genuine_dip_under_the_pass_level_still_passes() -> None:
    """A live face whose one frame scores 0.86 (review on its own) passes on the mean of its frames."""
    pad = PadSettings()
    dip = [_pad(Outcome.PASS, 0.98), _pad(Outcome.INCONCLUSIVE, 0.86), _pad(Outcome.PASS, 0.97)]
    fused = fuse_pad(dip, pad)
    assert fused.outcome is Outcome.PASS and fused.score is not None and abs(fused.score - 0.937) < 0.001
    # Frames that are all just under the PASS level (the best attacks of the dev sets) never pass.
    near = [
        _pad(Outcome.INCONCLUSIVE, 0.88),
        _pad(Outcome.INCONCLUSIVE, 0.89),
        _pad(Outcome.INCONCLUSIVE, 0.87),
    ]
    assert fuse_pad(near, pad).outcome is Outcome.INCONCLUSIVE
    # One attack frame blocks PASS even when the mean is high.
    one_attack = [
        _pad(Outcome.PASS, 1.0),
        _pad(Outcome.PASS, 1.0),
        _pad(Outcome.PASS, 1.0),
        _pad(Outcome.FAIL, 0.15),
    ]
    assert fuse_pad(one_attack, pad).outcome is Outcome.INCONCLUSIVE


def test_adaptive_gallery_refreshes_only_from_a_confident_pass(api: Api) -> None:
    import asyncio

    from skimage import data

    from identity.face import worker as face_worker
    from identity.face.results import template_from_bytes, template_to_bytes
    from media_server.checkin.gallery_update import adapt_gallery
    from media_server.db.enums import Modality, TemplateSource
    from media_server.db.models import Enrolment
    from media_server.gallery import active_template, save_template
    from media_server.verdict import VerdictOutcome

    person_id, session_id = _session(api)
    face = data.astronaut()
    frames = [face, np.ascontiguousarray(face[:, ::-1]), face[8:, 8:].copy(), face[:-8, :-8].copy()]

    async def run() -> tuple[str | None, str | None]:
        template, _ = await api.services.workers.run(face_worker.enrol, frames[:2])
        assert template is not None
        save_template(
            api.services,
            person_id,
            Modality.FACE,
            template_to_bytes(template),
            int(template.embeddings.shape[0]),
            template.model,
            actor="test",
            source=TemplateSource.ENROLMENT,
            details={},
        )
        result = await api.services.workers.run(face_worker.verify_frames, template, frames)
        assert result.passed, result.message
        capture = _capture(person_id, session_id, None, EndedReason.COMPLETED)
        capture = SessionCapture(
            **{
                **{f: getattr(capture, f) for f in capture.__dataclass_fields__},
                "frames": [(0.1 * i, f) for i, f in enumerate(frames)],
            }
        )
        review = VerdictOutcome(Decision.REVIEW, [], False)
        passed = VerdictOutcome(Decision.PASS, [], False)
        return (
            await adapt_gallery(api.services, capture, [result], review),
            await adapt_gallery(api.services, capture, [result], passed),
        )

    not_adapted, adapted = asyncio.run(run())
    assert not_adapted is None and adapted is not None
    with api.services.sessions() as db:
        row = db.get(Enrolment, adapted)
        assert row is not None and row.source is TemplateSource.ADAPTIVE and row.active
        assert "template_adapted" in db.scalars(select(AuditEntry.action)).all()
    merged = template_from_bytes(active_template(api.services, person_id, Modality.FACE) or b"")
    assert merged.metadata["n_enrolled"] == 2 and merged.embeddings.shape[0] > 2


def test_a_session_is_judged_once_even_when_its_job_runs_twice(api: Api) -> None:
    """A redelivered or repeated judging job returns the verdict the session already has."""
    _, session_id = _session(api)
    results = [
        CheckResult(CheckKind.FACE, Outcome.PASS, "match", "Face matches."),
        CheckResult(CheckKind.PAD, Outcome.PASS, "live", "Live face."),
    ]
    first, first_id = write_verdict(api.services, session_id, results, [CheckKind.FACE, CheckKind.PAD])
    again, again_id = write_verdict(api.services, session_id, results[:1], [CheckKind.FACE, CheckKind.PAD])
    assert again_id == first_id and again.decision is first.decision is Decision.PASS
    with api.services.sessions() as db:
        assert len(db.scalars(select(Verdict).where(Verdict.session_id == session_id)).all()) == 1
