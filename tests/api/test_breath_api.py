"""POST /api/v1/breath-tests through the real app: SQLite, local evidence store, real worker pool.

Real Ed25519 keys sign the readings (sobriety.simulator); the person's face is enrolled through the
enrolment API from LFW photos of one person; breath photos are other LFW photos of that person (or of
someone else) as a 320x240 station frame with the synthetic mouthpiece of sobriety.occlusion drawn on
the dlib landmarks. Every case checks its HTTP outcome, the stored verdict and that what was received is
kept as evidence (artifact rows whose bytes hash to what was sent, or an audit entry listing them).

One app (and one worker pool) serves the whole module to keep the engines' start-up cost to one; each
test registers its own person and station and uses its own photos, because the photo-reuse index spans
every test ever received.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from identity.geometry import FaceBox
from media_server.app import create_app
from media_server.breath import DbNonceLedger, now_utc
from media_server.db.enums import ArtifactKind, Decision, DeviceKind, Role, SessionKind
from media_server.db.models import (
    Artifact,
    AuditEntry,
    BreathEpisode,
    CheckResultRecord,
    CheckSession,
    Device,
    Enrolment,
    PhotoFingerprint,
    Verdict,
)
from sobriety.occlusion import occlude_mouth
from sobriety.simulator import multipart_parts, public_key_b64, sign_reading, simulated_reading
from tests.api.conftest import Api, Profile
from tests.api.seed import create_staff

ROOT = Path(__file__).resolve().parents[2]
LFW = ROOT / ".." / "shared" / "data" / "faces" / "lfw-dev"
MODELS_DIR = ROOT / "var" / "models"
# The person under supervision and the images each case uses (every base image is used by one case only).
ENROL = (
    "Hugo_Chavez/Hugo_Chavez_0002.jpg",
    "Hugo_Chavez/Hugo_Chavez_0027.jpg",
    "Hugo_Chavez/Hugo_Chavez_0036.jpg",
)
GENUINE = "Hugo_Chavez/Hugo_Chavez_0050.jpg"
SCREENING = "Hugo_Chavez/Hugo_Chavez_0053.jpg"
CONFIRMATORY = "Hugo_Chavez/Hugo_Chavez_0056.jpg"
REUSED = "Hugo_Chavez/Hugo_Chavez_0045.jpg"
NEVER_JUDGED = "Hugo_Chavez/Hugo_Chavez_0041.jpg"  # rejected submissions and fresh photos of the reuse case
SOMEONE_ELSE = "Geraldine_Chaplin/Geraldine_Chaplin_0001.jpg"
REPLAYED = "Ann_Veneman/Ann_Veneman_0010.jpg"
RESENT_AFTER_CRASH = "Hugo_Chavez/Hugo_Chavez_0051.jpg"
SWEPT = "Ann_Veneman/Ann_Veneman_0003.jpg"  # a station whose person is not enrolled: REVIEW once judged
# A station camera frame: the LFW image scaled to fill it (a face of ~140 px), as a home station sees it.
FRAME_W, FRAME_H = 320, 240
JPEG_QUALITY = 90
SHIFT_PX = 2  # the person moves a little between the photos of one blow
POSITIVE_BRAC = 0.06  # g/210L, three times the default limit
BREATH = "/api/v1/breath-tests"


# ------------------------------------------------------------------------------------------ photos
@functools.cache
def _dlib() -> tuple[Any, Any]:
    import dlib

    from identity.models import verified_path

    predictor, _ = verified_path("dlib_shape_predictor_68", MODELS_DIR)
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor))


def _frame(rel: str) -> np.ndarray:
    bgr = cv2.imread(str(LFW / rel), cv2.IMREAD_COLOR)
    assert bgr is not None, rel
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    square = cv2.resize(rgb, (FRAME_W, FRAME_W), interpolation=cv2.INTER_CUBIC)
    top = (FRAME_W - FRAME_H) // 2
    return np.ascontiguousarray(square[top : top + FRAME_H])


@functools.cache
def station_photos(rel: str, n: int = 3, seed: int = 0) -> tuple[bytes, ...]:
    """`n` JPEG station frames of one LFW image with a synthetic mouthpiece over the mouth."""
    detector, predictor = _dlib()
    rgb = _frame(rel)
    rects = detector(rgb, 1)
    assert rects, f"no face in {rel}"
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(rgb, rect)
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    box = FaceBox(
        max(0, rect.left()), max(0, rect.top()), min(FRAME_W, rect.right()), min(FRAME_H, rect.bottom())
    )
    occluded, _ = occlude_mouth(rgb, box, landmarks, np.random.default_rng(seed))
    out = []
    for j in range(n):
        shot = np.roll(occluded, SHIFT_PX * j, axis=1)
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        assert ok
        out.append(buf.tobytes())
    return tuple(out)


# ------------------------------------------------------------------------------------------ the app
@dataclass
class BreathApp(Api):
    app: Any = None

    def at(self, when: datetime | None) -> None:
        """Pin the server clock (None: the real clock)."""
        if when is None:
            self.app.dependency_overrides.pop(now_utc, None)
        else:
            self.app.dependency_overrides[now_utc] = lambda: when


@pytest.fixture(scope="module")
def breath_api(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> Iterator[BreathApp]:
    with profile.settings(tmp_path_factory.mktemp("breath") / "var") as settings:
        app = create_app(settings)
        with TestClient(app) as client:
            create_staff(app.state.services)
            client.cookies.clear()
            yield BreathApp(client=client, services=app.state.services, settings=settings, app=app)


@pytest.fixture
def api(breath_api: BreathApp) -> Iterator[BreathApp]:
    breath_api.at(None)
    yield breath_api
    breath_api.at(None)


@dataclass
class Station:
    person_id: str
    serial: str
    key: Ed25519PrivateKey


_counter = iter(range(10**6))


def _station(api: BreathApp, *, enrol: bool = True, calibrated_on: date | None = None) -> Station:
    n = next(_counter)
    officer = api.as_(Role.OFFICER)
    r = api.client.post(
        "/api/v1/persons",
        json={"external_ref": f"BR-CASE-{n}", "display_name": f"Breath {n}"},
        headers=officer,
    )
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    if enrol:
        files = [("images", (Path(p).name, (LFW / p).read_bytes(), "image/jpeg")) for p in ENROL]
        r = api.client.post(f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer)
        assert r.status_code == 201 and r.json()["enrolled"], r.text
    key = Ed25519PrivateKey.generate()
    serial = f"BR-STATION-{n}"
    body: dict[str, Any] = {
        "serial": serial,
        "kind": DeviceKind.BREATHALYZER.value,
        "person_id": person_id,
        "public_key_b64": public_key_b64(key),
    }
    if calibrated_on is not None:
        body["calibrated_on"] = calibrated_on.isoformat()
    r = api.client.post("/api/v1/devices", json=body, headers=api.as_(Role.ADMIN))
    assert r.status_code == 201, r.text
    return Station(person_id, serial, key)


def _reading(
    station: Station,
    photos: tuple[bytes, ...] | list[bytes],
    *,
    brac: float = 0.0,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    reading = simulated_reading(
        serial=station.serial,
        person_id=station.person_id,
        brac=brac,
        unit="g/210L",
        n_photos=len(photos),
        now=now,
    )
    return sign_reading(reading, station.key)


def _post(api: BreathApp, body: bytes, signature: str, photos: tuple[bytes, ...] | list[bytes]) -> Any:
    data, files = multipart_parts(body, signature, list(photos))
    return api.client.post(BREATH, data=data, files=files)


def _checks(response_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Summary checks by kind (the last of each kind wins: the reading's policy check over its validity)."""
    return {c["kind"]: c for c in response_json["checks"]}


def _session_evidence(api: BreathApp, session_id: str, sent: list[bytes]) -> list[Artifact]:
    """Artifact rows of the session; asserts every sent blob is stored and hashes to what was sent."""
    store = api.services.store
    with api.services.sessions() as db:
        rows = list(db.scalars(select(Artifact).where(Artifact.session_id == session_id)))
        db.expunge_all()
    digests = {r.sha256 for r in rows}
    for blob in sent:
        digest = hashlib.sha256(blob).hexdigest()
        assert digest in digests, "a received part is missing from the evidence"
    for r in rows:
        assert hashlib.sha256(store.get_bytes(r.key)).hexdigest() == r.sha256
    return rows


def _verdict(api: BreathApp, session_id: str) -> Verdict:
    with api.services.sessions() as db:
        verdict: Verdict = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).one()
        db.expunge(verdict)
        return verdict


def _audit(api: BreathApp, action: str, subject_id: str | None = None) -> list[AuditEntry]:
    with api.services.sessions() as db:
        q = select(AuditEntry).where(AuditEntry.action == action)
        if subject_id is not None:
            q = q.where(AuditEntry.subject_id == subject_id)
        rows = list(db.scalars(q))
        db.expunge_all()
        return rows


# ------------------------------------------------------------------------------------------ cases
def test_genuine_negative_test_passes_with_evidence_and_fingerprints(api: BreathApp) -> None:
    station = _station(api)
    with api.services.sessions() as db:
        enrolled = db.scalars(select(Enrolment.id).where(Enrolment.person_id == station.person_id)).all()
    photos = station_photos(GENUINE)
    body, sig = _reading(station, photos)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    out = r.json()
    checks = _checks(out)
    assert out["decision"] == "pass", out["reasons"]
    # A confident pass, yet the gallery does not learn from breath photos: the mouthpiece occludes the
    # lower face (README "Personal data"); only check-ins refresh the template.
    with api.services.sessions() as db:
        assert (
            db.scalars(select(Enrolment.id).where(Enrolment.person_id == station.person_id)).all() == enrolled
        )
    assert _audit(api, "template_adapted") == []
    assert (
        checks["face"]["code"] == "identity_confirmed"
        and checks["face"]["model"]["name"] == "dlib_resnet_face_v1"
    )
    assert checks["face"]["details"]["matches"] >= 2
    assert checks["breath_reading"]["code"] == "below_limit"
    assert checks["breath_reading"]["details"]["order_limit_source"] == "default_limit_g_210l"
    assert checks["photo_reuse"]["code"] == "photos_new"
    assert checks["pad"]["code"] == "pad_live"
    assert out["retest"] == {"required": False}
    assert out["episode"]["state"] == "negative"
    rows = _session_evidence(api, out["session_id"], [body, sig.encode(), *photos])
    kinds = sorted(r.kind.value for r in rows)
    assert kinds.count("photo") == 3 and kinds.count("reading") == 1
    with api.services.sessions() as db:
        session = db.get(CheckSession, out["session_id"])
        assert session is not None and session.kind is SessionKind.BREATH and session.meta["unscheduled"]
        prints = db.scalars(select(PhotoFingerprint).where(PhotoFingerprint.session_id == session.id)).all()
        assert len(prints) == 3 and all(len(p.phash) == 112 for p in prints)
        photo_rows = [a for a in rows if a.kind is ArtifactKind.PHOTO]
        assert all(
            a.meta.get("checks")
            for a in db.scalars(select(Artifact).where(Artifact.id.in_([p.id for p in photo_rows])))
        )
    verdict = _verdict(api, out["session_id"])
    assert verdict.decision is Decision.PASS and verdict.thresholds[
        "face.identity_confirmed"
    ] == pytest.approx(api.settings.sobriety.occluded_accept_distance)


def test_positive_screening_requires_confirmatory_which_then_fails(api: BreathApp) -> None:
    station = _station(api)
    t0 = datetime.now(UTC)
    api.at(t0)
    photos = station_photos(SCREENING)
    body, sig = _reading(station, photos, brac=POSITIVE_BRAC, now=t0)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    screening = r.json()
    assert screening["decision"] == "review"
    assert _checks(screening)["breath_reading"]["code"] == "screening_positive"
    retest = screening["retest"]
    assert (
        retest["required"] and retest["code"] == "confirmatory_required" and retest["stage"] == "confirmatory"
    )
    assert "due after 15 minutes" in retest["message"]
    due = datetime.fromisoformat(retest["due_at"])
    assert timedelta(minutes=14) < due - t0 <= timedelta(minutes=15)
    assert screening["episode"]["state"] == "deprivation"

    # The confirmatory test after the deprivation period: still positive -> FAIL, test to zero follows.
    t1 = t0 + timedelta(minutes=16)
    api.at(t1)
    photos = station_photos(CONFIRMATORY)
    body, sig = _reading(station, photos, brac=POSITIVE_BRAC, now=t1)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    confirm = r.json()
    assert _checks(confirm)["breath_reading"]["code"] == "confirmed_positive"
    assert confirm["decision"] == "fail", confirm["reasons"]
    assert confirm["retest"]["code"] == "test_to_zero" and confirm["episode"]["state"] == "test_to_zero"
    assert confirm["episode"]["id"] == screening["episode"]["id"]
    assert _verdict(api, confirm["session_id"]).decision is Decision.FAIL
    with api.services.sessions() as db:
        episode = db.get(BreathEpisode, confirm["episode"]["id"])
        assert episode is not None and episode.state == "test_to_zero" and episode.stage == "test_to_zero"
        assert [h["event"] for h in episode.history if h["event"] != "tick"] == ["positive", "positive"]
        assert episode.first_session_id == screening["session_id"]
        assert episode.last_session_id == confirm["session_id"]
    _session_evidence(api, confirm["session_id"], [body, sig.encode(), *photos])


def test_photos_of_someone_else_fail_identity(api: BreathApp) -> None:
    station = _station(api)
    photos = station_photos(SOMEONE_ELSE)
    body, sig = _reading(station, photos)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    out = r.json()
    face = _checks(out)["face"]
    assert face["code"] == "different_person" and face["outcome"] == "fail"
    assert all(d > api.settings.sobriety.occluded_reject_distance for d in face["details"]["distances"])
    assert out["decision"] == "fail"
    # The reading is not the person's: the episode asks for a retake instead of booking it negative.
    assert out["retest"]["code"] == "retake"
    _session_evidence(api, out["session_id"], [body, sig.encode(), *photos])


def test_a_photo_reused_in_a_later_test_is_detected(api: BreathApp) -> None:
    station = _station(api)
    photos = station_photos(REUSED)
    body, sig = _reading(station, photos)
    first = _post(api, body, sig, photos)
    assert first.status_code == 201, first.text
    assert _checks(first.json())["photo_reuse"]["code"] == "photos_new"
    fresh = station_photos(NEVER_JUDGED, seed=5)[:2]  # two new photos and one file from the first test
    again = [fresh[0], photos[1], fresh[1]]
    body2, sig2 = _reading(station, again)
    r = _post(api, body2, sig2, again)
    assert r.status_code == 201, r.text
    out = r.json()
    reuse = _checks(out)["photo_reuse"]
    assert reuse["code"] == "photo_reused" and reuse["outcome"] == "fail"
    assert reuse["details"]["exact"][0]["earlier_test_id"] == first.json()["session_id"]
    assert out["decision"] == "fail"
    _session_evidence(api, out["session_id"], [body2, sig2.encode(), *again])


def test_a_copy_committed_while_a_test_was_judged_is_still_caught(
    api: BreathApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reuse check runs on a read-only snapshot, outside the write lock. A photo another test committed
    after that snapshot (simulated: the snapshot sees no earlier photo) is found again under the lock, and
    the test is judged again there: two concurrent tests cannot miss each other's photos."""
    from media_server.breath import photos as breath_photos

    station = _station(api)
    photos = station_photos(REUSED, seed=11)
    body, sig = _reading(station, photos)
    first = _post(api, body, sig, photos)
    assert first.status_code == 201, first.text

    blind: list[int] = []

    def snapshot_without_the_copy(
        self: breath_photos._DeferredIndex, hashes: tuple[int, ...], sha256: str, max_distance: int
    ) -> list[object]:
        blind.append(1)
        self.lookups.append(((hashes, sha256, max_distance), frozenset()))
        return []

    monkeypatch.setattr(breath_photos._DeferredIndex, "find", snapshot_without_the_copy)
    again = [station_photos(NEVER_JUDGED, seed=12)[0], photos[1], photos[2]]
    body2, sig2 = _reading(station, again)
    r = _post(api, body2, sig2, again)
    assert r.status_code == 201, r.text
    assert blind, "the snapshot lookup ran"
    reuse = _checks(r.json())["photo_reuse"]
    assert reuse["code"] == "photo_reused" and reuse["outcome"] == "fail"
    assert reuse["details"]["exact"][0]["earlier_test_id"] == first.json()["session_id"]
    with api.app.state.services.sessions() as db:
        added = db.scalars(
            select(PhotoFingerprint).where(PhotoFingerprint.session_id == r.json()["session_id"])
        ).all()
    assert len(added) == 3  # fingerprints written once, by the judgement under the lock


def test_forged_signature_is_refused_kept_and_sent_to_review(api: BreathApp) -> None:
    station = _station(api, enrol=False)
    photos = station_photos(NEVER_JUDGED, seed=9)
    reading = simulated_reading(
        serial=station.serial, person_id=station.person_id, brac=0.0, unit="g/210L", n_photos=3
    )
    body, sig = sign_reading(reading, Ed25519PrivateKey.generate())  # not the registered key
    r = _post(api, body, sig, photos)
    assert r.status_code == 401, r.text
    out = r.json()
    assert out["error"] == "bad_signature" and out["message"]
    assert out["decision"] == "review"
    sig_check = _checks(out)["breath_signature"]
    assert sig_check["details"]["integrity_violation"] is True
    rows = _session_evidence(api, out["session_id"], [body, sig.encode(), *photos])
    assert sum(a.kind is ArtifactKind.PHOTO for a in rows) == 3
    assert _verdict(api, out["session_id"]).decision is Decision.REVIEW
    entries = _audit(api, "breath_rejected", out["session_id"])
    assert entries and entries[0].details["code"] == "bad_signature"
    with api.services.sessions() as db:
        stored = db.scalars(
            select(CheckResultRecord).where(CheckResultRecord.session_id == out["session_id"])
        ).all()
        assert [c.code for c in stored] == ["bad_signature"]


def test_resend_is_answered_with_the_original_outcome_and_a_changed_reading_is_a_replay(
    api: BreathApp,
) -> None:
    station = _station(api, enrol=False)
    photos = station_photos(REPLAYED)
    reading = simulated_reading(
        serial=station.serial, person_id=station.person_id, brac=0.0, unit="g/210L", n_photos=len(photos)
    )
    body, sig = sign_reading(reading, station.key)
    first = _post(api, body, sig, photos)
    assert first.status_code == 201, first.text
    assert first.json()["decision"] == "review"  # not enrolled: identity cannot be confirmed
    assert _checks(first.json())["face"]["code"] == "not_enrolled"
    stored_before = _artifact_count(api)

    # The station lost the answer and sends the same bytes again: the same request, the same answer.
    again = _post(api, body, sig, photos)
    assert again.status_code == 201, again.text
    assert again.json()["session_id"] == first.json()["session_id"]
    assert again.json()["verdict_id"] == first.json()["verdict_id"]
    assert _artifact_count(api) == stored_before  # nothing new stored, nothing booked as a replay
    assert not _audit(api, "breath_rejected", first.json()["session_id"])

    # A different reading that reuses the nonce is a replay: refused, kept, sent to review.
    changed_body, changed_sig = sign_reading({**reading, "brac": 0.01}, station.key)
    r = _post(api, changed_body, changed_sig, photos)
    assert r.status_code == 409, r.text
    out = r.json()
    assert out["error"] == "replayed_nonce" and out["session_id"] != first.json()["session_id"]
    assert out["decision"] == "review"
    _session_evidence(api, out["session_id"], [changed_body, changed_sig.encode(), *photos])
    assert _audit(api, "breath_rejected", out["session_id"])[0].details["code"] == "replayed_nonce"


def _artifact_count(api: BreathApp) -> int:
    with api.services.sessions() as db:
        return len(db.scalars(select(Artifact.id)).all())


def _crashed_submission(
    api: BreathApp, station: Station, photos: tuple[bytes, ...]
) -> tuple[str, bytes, str]:
    """Evidence stored and the nonce spent, then the node died before any verdict (kill -9 mid-test)."""
    from media_server.breath.evidence import _route, _store_session_evidence
    from media_server.breath.values import Upload

    reading = simulated_reading(
        serial=station.serial, person_id=station.person_id, brac=0.0, unit="g/210L", n_photos=len(photos)
    )
    body, sig = sign_reading(reading, station.key)
    upload = Upload(body, sig, [(f"photo_{i}", p, "image/jpeg") for i, p in enumerate(photos)])
    route = _route(api.services, upload, now_utc())
    assert route.session_id is not None and route.device_id is not None
    _store_session_evidence(api.services, route.session_id, upload)
    assert DbNonceLedger(api.services.sessions).remember(route.device_id, reading["nonce"], now_utc())
    return route.session_id, body, sig


def test_a_resend_after_a_crash_is_judged_from_the_stored_evidence_once(api: BreathApp) -> None:
    station = _station(api)
    photos = station_photos(RESENT_AFTER_CRASH)
    session_id, body, sig = _crashed_submission(api, station, photos)
    stored_before = _artifact_count(api)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    assert r.json()["session_id"] == session_id and r.json()["verdict_id"], r.text
    checks = _checks(r.json())
    # judged in full from the stored evidence: its own nonce is not a replay, the photos were analysed
    assert {"breath_signature", "breath_reading", "face", "breath_photo", "photo_reuse"} <= set(checks)
    assert all(c["code"] != "replayed_nonce" for c in r.json()["checks"])
    again = _post(api, body, sig, photos)
    assert again.status_code == 201 and again.json()["verdict_id"] == r.json()["verdict_id"]
    with api.services.sessions() as db:
        assert len(db.scalars(select(Verdict).where(Verdict.session_id == session_id)).all()) == 1
    # only the verdict manifest was added: the resent bytes were not stored twice
    assert _artifact_count(api) == stored_before + 1


def test_the_recovery_sweep_judges_what_a_crash_left_unjudged(api: BreathApp) -> None:
    import asyncio

    from media_server.db.enums import SessionStatus
    from media_server.recovery import sweep

    station = _station(api, enrol=False)
    breath_id, _, _ = _crashed_submission(api, station, station_photos(SWEPT))
    started = now_utc() - timedelta(hours=2)
    with api.services.sessions.begin() as db:
        live = CheckSession(
            person_id=station.person_id,
            kind=SessionKind.CHECKIN,
            status=SessionStatus.ACTIVE,
            window_start=started,
            window_end=started + timedelta(minutes=30),
            started_at=started,
            meta={},
        )
        db.add(live)
        db.flush()
        checkin_id = live.id
    grace = api.settings.schedules.recovery_grace_s
    report = asyncio.run(sweep(api.services, now_utc() + timedelta(seconds=grace + 1)))
    assert breath_id in report.rejudged and checkin_id in report.technical
    with api.services.sessions() as db:
        [breath_verdict] = db.scalars(select(Verdict).where(Verdict.session_id == breath_id)).all()
        [checkin_verdict] = db.scalars(select(Verdict).where(Verdict.session_id == checkin_id)).all()
        assert breath_verdict.decision is Decision.REVIEW  # judged: the face is not enrolled
        assert checkin_verdict.decision is Decision.REVIEW and checkin_verdict.retake_offered
        assert "stopped before this session was judged" in checkin_verdict.reasons[0]
        checkin = db.get(CheckSession, checkin_id)
        assert checkin is not None and checkin.status is SessionStatus.TECHNICAL_FAILURE
    # A second sweep (another node, the next tick) writes nothing twice.
    again = asyncio.run(sweep(api.services, now_utc() + timedelta(seconds=grace + 1)))
    assert breath_id not in again.rejudged and checkin_id not in again.technical


def test_expired_calibration_in_the_device_registry_is_422(api: BreathApp) -> None:
    station = _station(api, enrol=False, calibrated_on=date.today() - timedelta(days=400))
    photos = station_photos(NEVER_JUDGED, seed=11)
    body, sig = _reading(station, photos)  # the station itself claims a calibration 30 days ago
    r = _post(api, body, sig, photos)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["error"] == "calibration_expired"
    assert out["decision"] == "review" and out["retest"]["code"] == "retake"
    assert _verdict(api, out["session_id"]).retake_offered
    _session_evidence(api, out["session_id"], [body, sig.encode(), *photos])
    assert _audit(api, "breath_rejected", out["session_id"])[0].details["code"] == "calibration_expired"


def test_unknown_device_is_401_and_its_bytes_are_still_stored(api: BreathApp) -> None:
    key = Ed25519PrivateKey.generate()
    reading = simulated_reading(serial="BR-NOBODY", person_id="p-1", brac=0.0, unit="g/210L", n_photos=1)
    body, sig = sign_reading(reading, key)
    photo = b"\xff\xd8not really a jpeg"
    r = _post(api, body, sig, [photo])
    assert r.status_code == 401 and r.json()["error"] == "unknown_device", r.text
    assert r.json()["session_id"] is None
    entry = _audit(api, "breath_rejected")[-1]
    assert entry.details["code"] == "unknown_device" and entry.details["serial"] == "BR-NOBODY"
    listed = {a["sha256"]: a["key"] for a in entry.details["artifacts"]}
    for blob in (body, sig.encode(), photo):
        digest = hashlib.sha256(blob).hexdigest()
        assert api.services.store.get_bytes(listed[digest]) == blob


def test_unreadable_photo_is_technical_not_a_500(api: BreathApp) -> None:
    station = _station(api, enrol=False)
    photos = [b"GIF89a-broken", b"\x00" * 64, b"not an image"]
    body, sig = _reading(station, photos)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    out = r.json()
    photo_checks = [c for c in out["checks"] if c["code"] == "photos_unreadable"]
    assert photo_checks and photo_checks[0]["outcome"] == "technical"
    assert out["decision"] == "review" and _verdict(api, out["session_id"]).retake_offered


def test_upload_bounds(api: BreathApp) -> None:
    station = _station(api, enrol=False)
    too_many = [b"x"] * (api.settings.sobriety.photo_max_count + 1)
    body, sig = _reading(station, too_many)
    r = _post(api, body, sig, too_many)
    assert r.status_code == 400 and r.json()["error"] == "bad_input", r.text
    big = [b"\xff\xd8" + b"\x00" * api.settings.sobriety.photo_max_bytes]
    body, sig = _reading(station, big)
    r = _post(api, body, sig, big)
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    r = api.client.post(BREATH, data={"signature": base64.b64encode(b"x" * 64).decode()})
    assert r.status_code == 400, r.text


def test_nonce_ledger_is_atomic_under_concurrency(api: BreathApp) -> None:
    station = _station(api, enrol=False)
    with api.services.sessions() as db:
        device_id = db.scalars(select(Device.id).where(Device.serial == station.serial)).one()
    ledger = DbNonceLedger(api.services.sessions)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def remember() -> None:
        barrier.wait()
        results.append(ledger.remember(device_id, "0123456789abcdef0123", datetime.now(UTC)))

    threads = [threading.Thread(target=remember) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert ledger.seen(device_id, "0123456789abcdef0123")


def test_a_confirmatory_test_never_taken_is_booked_by_the_episode_clock(api: BreathApp) -> None:
    import asyncio

    from media_server.breath import tick_episodes

    station = _station(api)
    t0 = datetime.now(UTC)
    api.at(t0)
    photos = station_photos(SCREENING, seed=7)
    body, sig = _reading(station, photos, brac=POSITIVE_BRAC, now=t0)
    r = _post(api, body, sig, photos)
    assert r.status_code == 201, r.text
    screening = r.json()
    assert screening["episode"]["state"] == "deprivation"
    # Nothing changes while the confirmatory window is still open.
    soon = asyncio.run(tick_episodes(api.services, t0 + timedelta(minutes=5)))
    assert all(t.episode_id != screening["episode"]["id"] or t.verdict_id is None for t in soon)
    # Long after the window: the clock closes the episode and books its result for review.
    later = asyncio.run(tick_episodes(api.services, t0 + timedelta(days=1)))
    (tick,) = [t for t in later if t.episode_id == screening["episode"]["id"]]
    assert tick.state == "unconfirmed" and tick.verdict_id is not None and tick.outcome is not None
    assert tick.outcome.decision is Decision.REVIEW  # a missed confirmatory is never booked as FAIL by itself
    with api.services.sessions() as db:
        episode = db.get(BreathEpisode, screening["episode"]["id"])
        assert episode is not None and episode.closed_at is not None
        verdict = db.get(Verdict, tick.verdict_id)
        assert verdict is not None and verdict.session_id == tick.session_id != screening["session_id"]
        booked = db.get(CheckSession, verdict.session_id)
        assert booked is not None and booked.meta["follows"] == screening["session_id"]
        assert booked.meta["episode_id"] == screening["episode"]["id"]
    assert _audit(api, "breath_episode_updated")


def test_one_submission_reads_station_and_person_once_and_runs_one_job_per_photo(
    api: BreathApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing reads the station and the person; admission, the reading's context and the verdict reuse
    them (no repeated loads); the photos go to the pool as one job each, all in flight together."""
    from sqlalchemy import event

    station = _station(api)
    with api.services.sessions() as db:
        device_id = db.scalars(select(Device.id).where(Device.serial == station.serial)).one()
    photos = station_photos("Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg")
    body, sig = _reading(station, photos)
    reads: dict[str, int] = {"devices": 0, "persons": 0}

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        text = statement.lower()
        values = {str(v) for v in (parameters.values() if isinstance(parameters, dict) else parameters or ())}
        if text.lstrip().startswith("select") and "from devices" in text:
            reads["devices"] += bool(values & {station.serial, device_id})
        if text.lstrip().startswith("select") and "from persons" in text:
            reads["persons"] += station.person_id in values

    jobs: list[str] = []
    in_flight = {"now": 0, "max": 0}
    real_run = api.services.workers.run

    async def run(fn: Any, *args: Any) -> Any:
        jobs.append(fn.__name__)
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return await real_run(fn, *args)
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(api.services.workers, "run", run)
    event.listen(api.services.engine, "before_cursor_execute", count)
    try:
        r = _post(api, body, sig, photos)
    finally:
        event.remove(api.services.engine, "before_cursor_execute", count)
    assert r.status_code == 201, r.text
    assert reads == {"devices": 1, "persons": 1}, reads
    assert jobs == ["analyse_photos_job"] * len(photos)
    assert in_flight["max"] == len(photos)
