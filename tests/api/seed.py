"""Test data through the real database and evidence store: a flagged check-in and a breath test.

Media are real: a recording (VP8/Opus WebM, the format the session recorder stores) made by ffmpeg from `skimage.data.astronaut()` (public
domain) with espeak-ng speech, JPEG frames with OpenCV face boxes, a 16 kHz mono WAV. The verdict is
computed by the real policy (`media_server.verdict.decide`); its manifest hash is the sha256 of a
canonical JSON of the artifacts and checks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.models import load_manifest
from media_server.db import audit
from media_server.db.enums import ArtifactKind, SessionKind, SessionStatus
from media_server.db.models import Artifact, CheckResultRecord, CheckSession, Person, Verdict
from media_server.db.types import utcnow
from media_server.verdict import decide
from tests.api.conftest import PASSWORD, ROLES, SQLITE, Api, Profile

FRAME_SIDE_PX = 320
FRAME_TIMES_S = (0.5, 1.5, 2.5)
RECORDING_S = 3
SPEECH_TEXT = "Three seven one nine four. This is a check-in for Kuzet."
# Face: cosine distance just above the PASS threshold -> INCONCLUSIVE (borderline, human review).
FACE_DISTANCE = 0.412
FACE_THRESHOLD = 0.398
PAD_LIVE_SCORE = 0.97
PAD_THRESHOLD = 0.8
VOICE_SCORE = 0.83
VOICE_THRESHOLD = 0.71
SEED_ACTOR = "test:seed"


@dataclass(frozen=True)
class SeedFrame:
    """One sampled JPEG frame and the face box found on it (percent of the frame)."""

    jpeg: bytes
    t_s: float
    box: dict[str, float]


@dataclass(frozen=True)
class SeedMedia:
    """Media bytes shared by every seeded session of a test run."""

    recording_webm: bytes
    speech_wav16k: bytes
    frames: tuple[SeedFrame, ...]
    photos: tuple[bytes, ...]


@dataclass(frozen=True)
class SeededSession:
    """What the seeder wrote: ids to look things up by, and the verdict's manifest hash."""

    person_id: str
    person_name: str
    session_id: str
    verdict_id: str
    manifest_sha256: str
    artifacts: dict[ArtifactKind, list[str]] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=60)


def _face_box(rgb: Any) -> dict[str, float]:
    """The largest OpenCV Haar face on an RGB frame, as percentages of its width and height."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cascade_file = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(cascade_file)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
    h, w = gray.shape
    if len(faces) == 0:
        raise RuntimeError("OpenCV found no face on the astronaut frame")
    x, y, fw, fh = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    return {
        "left_pct": round(100.0 * float(x) / w, 2),
        "top_pct": round(100.0 * float(y) / h, 2),
        "width_pct": round(100.0 * float(fw) / w, 2),
        "height_pct": round(100.0 * float(fh) / h, 2),
    }


@functools.cache
def seed_media() -> SeedMedia:
    """Make the media once per test process (ffmpeg + espeak-ng, about a second)."""
    import numpy as np
    from PIL import Image, ImageEnhance
    from skimage import data

    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed to make seed media")
    face = Image.fromarray(data.astronaut()).resize((FRAME_SIDE_PX, FRAME_SIDE_PX))
    with tempfile.TemporaryDirectory(prefix="kuzet-seed-") as tmp:
        d = Path(tmp)
        png = d / "face.png"
        face.save(png)
        raw = d / "speech-raw.wav"
        _run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), SPEECH_TEXT])
        wav = d / "speech16k.wav"
        _run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(raw),
                "-ar",
                "16000",
                "-ac",
                "1",
                "-c:a",
                "pcm_s16le",
                str(wav),
            ]
        )
        webm = d / "recording.webm"
        # VP8/Opus in WebM, what the session recorder stores from a browser; realtime libvpx encodes it in
        # well under a second.
        _run(
            ["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "10", "-i", str(png), "-i", str(raw),
             "-t", str(RECORDING_S), "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k",
             "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "48k", "-ar", "48000",
             "-shortest", str(webm)]
        )  # fmt: skip
        recording, speech = webm.read_bytes(), wav.read_bytes()
    frames = []
    photos = []
    for i, t_s in enumerate(FRAME_TIMES_S):
        img = ImageEnhance.Brightness(face).enhance(0.9 + 0.1 * i)
        rgb = np.asarray(img)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        frames.append(SeedFrame(jpeg=buf.getvalue(), t_s=t_s, box=_face_box(rgb)))
        photo = io.BytesIO()
        img.rotate(3 * (i - 1)).save(photo, format="JPEG", quality=80)
        photos.append(photo.getvalue())
    return SeedMedia(recording, speech, tuple(frames), tuple(photos))


def _stamp(name: str) -> ModelStamp:
    return load_manifest()[name].stamp()


def _store(
    services: Any,
    db: Any,
    session_id: str,
    kind: ArtifactKind,
    data: bytes,
    content_type: str,
    meta: dict[str, Any],
) -> Artifact:
    stored = services.store.put_bytes(
        data, content_type=content_type, metadata={"session-id": session_id, "kind": kind.value}
    )
    row = Artifact(
        session_id=session_id,
        key=stored.key,
        sha256=stored.sha256,
        size=stored.size,
        content_type=content_type,
        kind=kind,
        spooled=stored.spooled,
        meta=meta,
    )
    db.add(row)
    db.flush()
    # the same audit entry as media_server.artifacts.store_artifact writes
    audit.append(
        db,
        SEED_ACTOR,
        "evidence_stored",
        "session",
        session_id,
        {"artifact_id": row.id, "kind": kind.value, "sha256": stored.sha256, "size": stored.size},
    )
    return row


def manifest_sha256(artifacts: Sequence[Artifact], checks: Sequence[CheckResult]) -> str:
    """sha256 of the canonical JSON of the artifacts (id, kind, sha256, size) and the checks."""
    payload = {
        "artifacts": [
            {"id": a.id, "kind": a.kind.value, "sha256": a.sha256, "size": a.size}
            for a in sorted(artifacts, key=lambda a: a.id)
        ],
        "checks": [c.to_dict() for c in checks],
    }
    return hashlib.sha256(audit.canonical_json(payload).encode("ascii")).hexdigest()


def _finish(
    services: Any,
    db: Any,
    session: CheckSession,
    person: Person,
    artifacts: list[Artifact],
    checks: list[CheckResult],
    required: Sequence[CheckKind],
) -> SeededSession:
    for c in checks:
        db.add(CheckResultRecord.from_check(session.id, c))
    outcome = decide(checks, required)
    digest = manifest_sha256(artifacts, checks)
    verdict = Verdict(
        session_id=session.id,
        decision=outcome.decision,
        reasons=outcome.reasons,
        retake_offered=outcome.retake_offered,
        policy_version=outcome.policy_version,
        thresholds=outcome.thresholds,
        models=outcome.models,
        manifest_sha256=digest,
    )
    db.add(verdict)
    db.flush()
    audit.append(
        db,
        SEED_ACTOR,
        "verdict_written",
        "session",
        session.id,
        {"verdict_id": verdict.id, "decision": outcome.decision.value, "manifest_sha256": digest},
    )
    by_kind: dict[ArtifactKind, list[str]] = {}
    for a in artifacts:
        by_kind.setdefault(a.kind, []).append(a.id)
    return SeededSession(
        person_id=person.id,
        person_name=person.display_name,
        session_id=session.id,
        verdict_id=verdict.id,
        manifest_sha256=digest,
        artifacts=by_kind,
        checks=checks,
        reasons=list(outcome.reasons),
    )


def _person(db: Any, external_ref: str, display_name: str) -> Person:
    person: Person | None = db.query(Person).filter_by(external_ref=external_ref).one_or_none()
    if person is None:
        person = Person(external_ref=external_ref, display_name=display_name)
        db.add(person)
        db.flush()
        audit.append(db, SEED_ACTOR, "person_created", "person", person.id, {})
    return person


def seed_flagged_checkin(
    services: Any, *, external_ref: str = "SEED-1", display_name: str = "Seed Person One"
) -> SeededSession:
    """A completed phone check-in whose face match is borderline: verdict REVIEW, in the queue."""
    media = seed_media()
    now = utcnow()
    with services.sessions.begin() as db:
        person = _person(db, external_ref, display_name)
        session = CheckSession(
            person_id=person.id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.COMPLETED,
            window_start=now - timedelta(minutes=20),
            window_end=now + timedelta(minutes=10),
            started_at=now - timedelta(minutes=5),
            ended_at=now - timedelta(minutes=4),
            location={"status": "ok", "lat": 43.2389, "lon": 76.8897, "accuracy_m": 25},
            challenge={"prompts": ["turn_left", "blink"], "digits": "37194"},
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
                    "duration_s": RECORDING_S,
                    "format": "webm",
                    "codecs": {"video": "vp8", "audio": "opus"},
                    "gaps": 0,
                    "frames_missing": {"video": 0, "audio": 0},
                    "gap_list": [],
                },
            ),
        ]
        face = _stamp("dlib_resnet_face_v1")
        for i, frame in enumerate(media.frames):
            # the first frame lands under the threshold (a match), the others just over it
            score = round(FACE_DISTANCE + 0.015 * (i - 1), 4)
            artifacts.append(
                _store(
                    services,
                    db,
                    session.id,
                    ArtifactKind.FRAME,
                    frame.jpeg,
                    "image/jpeg",
                    {
                        "t_s": frame.t_s,
                        "score": score,
                        "display_w": 240,
                        "boxes": [{**frame.box, "match": score <= FACE_THRESHOLD}],
                    },
                )
            )
        artifacts.append(
            _store(
                services,
                db,
                session.id,
                ArtifactKind.AUDIO,
                media.speech_wav16k,
                "audio/wav",
                {"sample_rate_hz": 16000},
            )
        )
        checks = [
            CheckResult(
                kind=CheckKind.FACE,
                outcome=Outcome.INCONCLUSIVE,
                code="borderline",
                message="face distance is between the match threshold and the mismatch limit",
                score=FACE_DISTANCE,
                threshold=FACE_THRESHOLD,
                model=face,
                details={"score_unit": "cosine_distance", "fail_above": 0.52, "frames": len(media.frames)},
            ),
            CheckResult(
                kind=CheckKind.PAD,
                outcome=Outcome.PASS,
                code="live",
                message="no presentation attack detected",
                score=PAD_LIVE_SCORE,
                threshold=PAD_THRESHOLD,
                model=_stamp("minifasnet_v2_2.7"),
                details={"score_unit": "live_probability"},
            ),
            CheckResult(
                kind=CheckKind.VOICE,
                outcome=Outcome.PASS,
                code="match",
                message="voice matches the enrolment",
                score=VOICE_SCORE,
                threshold=VOICE_THRESHOLD,
                model=_stamp("resemblyzer_ge2e"),
                details={"score_unit": "cosine_similarity"},
            ),
        ]
        return _finish(
            services, db, session, person, artifacts, checks, [CheckKind.FACE, CheckKind.PAD, CheckKind.VOICE]
        )


def seed_breath_session(
    services: Any, *, external_ref: str = "SEED-2", display_name: str = "Seed Person Two"
) -> SeededSession:
    """A breath test: three photos during the blow and the signed reading; one photo check is unsure."""
    media = seed_media()
    now = utcnow()
    with services.sessions.begin() as db:
        person = _person(db, external_ref, display_name)
        session = CheckSession(
            person_id=person.id,
            kind=SessionKind.BREATH,
            status=SessionStatus.COMPLETED,
            window_start=now - timedelta(minutes=30),
            window_end=now + timedelta(minutes=30),
            started_at=now - timedelta(minutes=2),
            ended_at=now - timedelta(minutes=1),
            meta={"seeded": True},
        )
        db.add(session)
        db.flush()
        reading = {
            "brac_g_210l": 0.0,
            "unit": "g/210L",
            "device_serial": "BR-SEED-1",
            "calibrated_on": (now - timedelta(days=40)).date().isoformat(),
            "blow_started_at": (now - timedelta(minutes=2)).isoformat(),
            "blow_duration_s": 4.2,
        }
        artifacts = [
            _store(
                services,
                db,
                session.id,
                ArtifactKind.READING,
                json.dumps(reading, sort_keys=True).encode(),
                "application/json",
                {},
            )
        ]
        for i, photo in enumerate(media.photos):
            captured = (now - timedelta(minutes=2) + timedelta(seconds=1.5 * i)).isoformat()
            artifacts.append(
                _store(
                    services,
                    db,
                    session.id,
                    ArtifactKind.PHOTO,
                    photo,
                    "image/jpeg",
                    {"captured_at": captured},
                )
            )
        checks = [
            CheckResult(CheckKind.BREATH_SIGNATURE, Outcome.PASS, "valid", "reading signature verified"),
            CheckResult(
                CheckKind.BREATH_READING,
                Outcome.PASS,
                "below_limit",
                "BrAC 0.000 g/210L is below the limit",
                score=0.0,
                threshold=0.02,
                details={"score_unit": "g/210L"},
            ),
            CheckResult(
                CheckKind.BREATH_PHOTO,
                Outcome.INCONCLUSIVE,
                "mouthpiece_occludes",
                "the face under the mouthpiece could not be matched with confidence",
                score=FACE_DISTANCE,
                threshold=FACE_THRESHOLD,
                model=_stamp("dlib_resnet_face_v1"),
            ),
        ]
        return _finish(
            services,
            db,
            session,
            person,
            artifacts,
            checks,
            [CheckKind.BREATH_SIGNATURE, CheckKind.BREATH_READING, CheckKind.BREATH_PHOTO],
        )


def create_staff(services: Any) -> None:
    """One user per role (username = role value, password `PASSWORD`), sharing one argon2 hash."""
    from media_server.db.models import User
    from media_server.tokens import hash_password

    password_hash = hash_password(PASSWORD)  # argon2 costs ~0.1-0.6 s: hash once
    with services.sessions.begin() as db:
        for role in ROLES:
            user = User(username=role.value, password_hash=password_hash, role=role)
            db.add(user)
            db.flush()
            audit.append(db, "test", "user_created", "user", user.id, {})


def app_settings(data_dir: Path) -> Any:
    """Settings for a test app: SQLite and the local evidence directory under `data_dir`."""
    from media_server.settings import Settings

    return Settings(data_dir=data_dir, models={"dir": Path("var/models").resolve()})


@contextlib.contextmanager
def staff_app(data_dir: Path, profile: Profile = SQLITE) -> Iterator[Api]:
    """The app (TestClient, lifespan run) on `profile` (default: embedded) with `create_staff`; no cookies."""
    from fastapi.testclient import TestClient

    from media_server.app import create_app

    with profile.settings(data_dir) as settings:
        app = create_app(settings)
        with TestClient(app) as client:
            create_staff(app.state.services)
            client.cookies.clear()
            yield Api(client=client, services=app.state.services, settings=settings)
