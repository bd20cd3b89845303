"""Gallery housekeeping on a migrated SQLite: the template row cap with superseded templates already
present, and the cap on adaptive embeddings across repeated refreshes.

The face engine is a fake of our `AnalysisPool` port: each refresh "enrols" embeddings filled with the
number of the refresh, so the stored template shows exactly which refreshes it still holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face import worker as face_worker
from identity.face.results import EMBEDDING_DIM, Template, template_from_bytes, template_to_bytes
from media_server.checkin.gallery_update import adapt_gallery
from media_server.db.enums import Decision, Modality, TemplateSource
from media_server.db.models import Enrolment, Person
from media_server.gallery import active_template, save_template
from media_server.keys import decrypt_template
from media_server.services import Services, build_services
from media_server.settings import Settings
from media_server.verdict import VerdictOutcome
from media_server.webrtc.capture import EndedReason, SessionCapture

T = TypeVar("T")
MODEL = ModelStamp("dlib", "1", "e" * 64)
KEPT = 2  # gallery.superseded_templates_kept
MAX_ADAPTIVE = 4  # gallery.max_adaptive_embeddings
PER_UPDATE = 3  # gallery.frames_per_update
ENROLLED = 100.0  # the value every enrolled embedding is filled with


class CountingEnrolPool:
    """`AnalysisPool` fake: `face_worker.enrol` returns one embedding per image, filled with the call's number."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        assert fn is face_worker.enrol
        images, previous = args
        self.calls += 1
        fresh = np.full((len(images), EMBEDDING_DIM), float(self.calls), dtype=np.float32)
        template = Template(embeddings=fresh, model=previous.model, created_at=Template.now())
        return (template, [])  # type: ignore[return-value]

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T:
        raise AssertionError("the gallery runs engines asynchronously")

    def warm(self) -> None:
        return None

    def shutdown(self, wait: bool = True) -> None:
        return None


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[Services]:
    built = build_services(
        Settings(
            data_dir=tmp_path / "var",
            gallery={
                "superseded_templates_kept": KEPT,
                "max_adaptive_embeddings": MAX_ADAPTIVE,
                "frames_per_update": PER_UPDATE,
            },
        )
    )
    built.workers.shutdown()
    built.workers = CountingEnrolPool()
    yield built
    built.engine.dispose()


def _person(services: Services) -> str:
    with services.sessions.begin() as db:
        person = Person(external_ref="KZ-GALLERY", display_name="Gallery Person")
        db.add(person)
        db.flush()
        return person.id


def _rows(services: Services, pid: str) -> list[Enrolment]:
    with services.sessions() as db:
        return list(
            db.scalars(
                select(Enrolment).where(Enrolment.person_id == pid).order_by(Enrolment.created_at.desc())
            ).all()
        )


def _template(services: Services, row: Enrolment) -> Template:
    raw = decrypt_template(
        services.keys.template_key, row.template_nonce, row.template_ciphertext, row.person_id
    )
    return template_from_bytes(raw)


def _enrol(services: Services, pid: str) -> str:
    enrolled = Template(
        embeddings=np.full((2, EMBEDDING_DIM), ENROLLED, dtype=np.float32),
        model=MODEL,
        created_at=Template.now(),
    )
    return save_template(
        services,
        pid,
        Modality.FACE,
        template_to_bytes(enrolled),
        2,
        MODEL,
        actor="officer:1",
        source=TemplateSource.ENROLMENT,
        details={},
    )


def test_a_new_template_trims_superseded_rows_already_held_to_the_cap(services: Services) -> None:
    pid = _person(services)
    first = _enrol(services, pid)
    # Rows left over from before housekeeping (issue 18 found 9 after 8 updates): five superseded ones.
    [row] = _rows(services, pid)
    old = datetime.now(UTC) - timedelta(days=30)
    with services.sessions.begin() as db:
        db.get_one(Enrolment, row.id).active = False
        for age_days in range(5):
            db.add(
                Enrolment(
                    person_id=pid,
                    modality=Modality.FACE,
                    template_ciphertext=row.template_ciphertext,
                    template_nonce=row.template_nonce,
                    n_samples=2,
                    model_name=MODEL.name,
                    model_version=MODEL.version,
                    weights_sha256=MODEL.weights_sha256,
                    active=False,
                    created_at=old - timedelta(days=age_days),
                )
            )
    assert len(_rows(services, pid)) == 6

    newest = _enrol(services, pid)
    rows = _rows(services, pid)
    assert len(rows) == 1 + KEPT
    assert [r.active for r in rows] == [True, False, False]
    # The newest superseded ones are kept (the row just replaced, then the youngest leftover).
    assert rows[0].id == newest and rows[1].id == first and rows[2].created_at == old
    # A voice template is another modality: its rows are counted on their own.
    save_template(
        services,
        pid,
        Modality.VOICE,
        b"voice",
        1,
        MODEL,
        actor="test",
        source=TemplateSource.ENROLMENT,
        details={},
    )
    assert len([r for r in _rows(services, pid) if r.modality is Modality.FACE]) == 1 + KEPT


def _capture(pid: str, session_id: str) -> SessionCapture:
    now = datetime.now(UTC)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    return SessionCapture(
        session_id=session_id,
        person_id=pid,
        kind="checkin",
        device_id=None,
        challenge=None,
        recording_path=None,
        frames=[(0.5 * i, rgb) for i in range(PER_UPDATE + 1)],
        audio_pcm16k=np.zeros(0, dtype=np.float32),
        audio_t0_s=None,
        events=[],
        location=None,
        ended_reason=EndedReason.COMPLETED,
        started_at=now,
        ended_at=now,
    )


def _confident_pass() -> CheckResult:
    frames = [{"index": i, "distance": 0.10 + 0.01 * i} for i in range(PER_UPDATE + 1)]
    return CheckResult(
        CheckKind.FACE,
        Outcome.PASS,
        "match",
        "",
        score=0.10,
        threshold=0.5,
        model=MODEL,
        details={"frames": frames},
    )


def test_adaptive_embeddings_stay_capped_oldest_first_across_repeated_refreshes(services: Services) -> None:
    pid = _person(services)
    _enrol(services, pid)
    passed = VerdictOutcome(Decision.PASS, [], False)
    for update in range(1, 6):
        sid = f"session-{update}"
        adapted = asyncio.run(adapt_gallery(services, _capture(pid, sid), [_confident_pass()], passed))
        assert adapted is not None
        active = template_from_bytes(active_template(services, pid, Modality.FACE) or b"")
        # The officer's enrolment is always kept, first.
        assert active.metadata["n_enrolled"] == 2 and active.metadata["adaptive_from"] == sid
        assert np.all(active.embeddings[:2] == ENROLLED)
        # Then at most MAX_ADAPTIVE adaptive embeddings: the newest ones, oldest dropped first.
        made = [float(u) for u in range(1, update + 1) for _ in range(PER_UPDATE)]
        assert active.embeddings[2:, 0].tolist() == made[-MAX_ADAPTIVE:]
        assert active.embeddings.shape == (2 + min(PER_UPDATE * update, MAX_ADAPTIVE), EMBEDDING_DIM)
        rows = _rows(services, pid)
        assert len(rows) == min(1 + update, 1 + KEPT) and rows[0].id == adapted and rows[0].active
        assert rows[0].n_samples == active.embeddings.shape[0]
    # The two superseded rows are the two refreshes before the last one.
    superseded = [_template(services, r).metadata.get("adaptive_from") for r in _rows(services, pid)[1:]]
    assert superseded == ["session-4", "session-3"]
    assert services.workers.calls == 5  # type: ignore[attr-defined]
