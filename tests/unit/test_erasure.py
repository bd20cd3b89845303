"""Subject erasure on a migrated SQLite and the local evidence store with short retention."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from media_server.cli import main
from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory
from media_server.db.enums import ArtifactKind, Decision, Modality, Role, SessionKind, SessionStatus
from media_server.db.migrate import upgrade
from media_server.db.models import (
    Artifact,
    AuditEntry,
    CheckResultRecord,
    CheckSession,
    Enrolment,
    Erasure,
    Person,
    PhotoFingerprint,
    User,
    Verdict,
)
from media_server.erasure import ErasureRefused, erase_due, erase_person, proof_hash
from media_server.evidence.local import LocalEvidenceStore
from media_server.evidence.port import NotFound

T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    factory: sessionmaker[Session]
    store: LocalEvidenceStore
    clock: Clock
    due: str
    kept: str
    keys: dict[str, str]


def _session_with(
    db: Session, store: LocalEvidenceStore, person_id: str, blobs: dict[str, bytes]
) -> dict[str, str]:
    s = CheckSession(
        person_id=person_id,
        kind=SessionKind.BREATH,
        status=SessionStatus.COMPLETED,
        window_start=T0,
        window_end=T0 + timedelta(hours=1),
        location={"lat": 43.24, "lon": 76.95},
    )
    db.add(s)
    db.flush()
    keys = {}
    for name, blob in blobs.items():
        stored = store.put_bytes(blob, content_type="image/jpeg")
        art = Artifact(
            session_id=s.id,
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            content_type="image/jpeg",
            kind=ArtifactKind.PHOTO,
            meta={"camera": "front"},
        )
        db.add(art)
        db.flush()
        db.add(PhotoFingerprint(artifact_id=art.id, session_id=s.id, person_id=person_id, phash="f" * 16))
        keys[name] = stored.key
    db.add(
        CheckResultRecord(
            session_id=s.id, kind="face", outcome="pass", code="match", message="ok", score=0.3,
            details={"embedding": [0.1] * 8},
        )
    )  # fmt: skip
    db.add(
        Verdict(
            session_id=s.id, decision=Decision.PASS, reasons=["all passed"], policy_version="p",
            manifest_sha256="0" * 64,
        )
    )  # fmt: skip
    return keys


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'kuzet.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = Clock(T0)
    store = LocalEvidenceStore(tmp_path / "evidence", retention_days=1, clock=clock)
    with factory() as db:
        due = Person(external_ref="case-1", display_name="Due Person", retention_until=T0 + timedelta(days=2))
        kept = Person(
            external_ref="case-2", display_name="Kept Person", retention_until=T0 + timedelta(days=400)
        )
        db.add_all([due, kept])
        db.flush()
        db.add(User(username="due-login", password_hash="x", role=Role.PERSON, person_id=due.id))
        for pid in (due.id, kept.id):
            db.add(
                Enrolment(
                    person_id=pid, modality=Modality.FACE, template_ciphertext=b"c" * 32,
                    template_nonce=b"n" * 12, n_samples=3, model_name="m", model_version="1",
                    weights_sha256="a" * 64,
                )
            )  # fmt: skip
        keys = _session_with(db, store, due.id, {"expired": b"photo-expired", "shared": b"photo-shared"})
        clock.now = T0 + timedelta(days=1, hours=12)  # stored later: retained until T0 + 2.5 days
        keys |= _session_with(db, store, due.id, {"later": b"photo-later", "held": b"photo-held"})
        store.set_legal_hold(keys["held"], True)
        keys |= {
            "other_" + k: v for k, v in _session_with(db, store, kept.id, {"shared": b"photo-shared"}).items()
        }
        db.commit()
        ids = (due.id, kept.id)
    yield World(factory, store, clock, ids[0], ids[1], keys)
    engine.dispose()


def _count(db: Session, model: type, **where: object) -> int:
    stmt = select(func.count()).select_from(model)
    for name, value in where.items():
        stmt = stmt.where(getattr(model, name) == value)
    return int(db.scalar(stmt) or 0)


def test_erase_due_removes_templates_and_free_evidence_only(world: World) -> None:
    now = T0 + timedelta(days=2, hours=1)  # the person is due; "expired" is free, "later" is not
    world.clock.now = now
    with world.factory() as db:
        [proof] = erase_due(db, world.store, now)
        assert proof.person_id == world.due
        assert proof.deleted_keys == [world.keys["expired"]]
        assert {(r.key, r.reason) for r in proof.retained} == {
            (world.keys["held"], "legal hold"),
            (world.keys["later"], f"retained until {(T0 + timedelta(days=2, hours=12)).isoformat()}"),
        }
        assert proof.counts["templates"] == 1 and proof.counts["photo_fingerprints"] == 4
        assert proof.counts["artifacts_shared"] == 1  # same bytes are evidence for a person still kept
        assert proof.proof_sha256 == proof_hash(world.due, now, proof.counts, proof.deleted_keys)

        db.expire_all()
        with pytest.raises(NotFound):
            world.store.stat(world.keys["expired"])
        for name in ("shared", "held", "other_shared"):
            assert world.store.stat(world.keys[name]).sha256  # still stored
        person = db.get(Person, world.due)
        assert person is not None and person.erased_at == now and person.display_name == "erased"
        assert _count(db, Enrolment, person_id=world.due) == 0
        assert _count(db, Enrolment, person_id=world.kept) == 1
        assert _count(db, PhotoFingerprint, person_id=world.kept) == 1
        user = db.scalar(select(User).where(User.person_id == world.due))
        assert user is not None and not user.active
        due_sessions = select(CheckSession.id).where(CheckSession.person_id == world.due)
        for check in db.scalars(
            select(CheckResultRecord).where(CheckResultRecord.session_id.in_(due_sessions))
        ):
            assert check.details == {"erased": True} and check.outcome == "pass"  # the decision stays
        assert _count(db, Verdict) == 3
        assert all(
            s.location is None
            for s in db.scalars(select(CheckSession).where(CheckSession.person_id == world.due))
        )
        [row] = db.scalars(select(Erasure)).all()
        assert row.proof_sha256 == proof.proof_sha256 and row.counts == proof.counts
        [entry] = db.scalars(select(AuditEntry).where(AuditEntry.action == "person.erased")).all()
        assert entry.subject_id == world.due and entry.details["proof_sha256"] == proof.proof_sha256
        assert "Due Person" not in str(entry.details)
        assert audit.verify_chain(db).ok


def test_retained_objects_are_erased_on_a_later_pass_but_held_ones_never(world: World) -> None:
    first = T0 + timedelta(days=2, hours=1)
    world.clock.now = first
    with world.factory() as db:
        erase_due(db, world.store, first)
        later = T0 + timedelta(days=5)
        world.clock.now = later
        [proof] = erase_due(db, world.store, later)
        assert proof.deleted_keys == [world.keys["later"]]
        assert [r.reason for r in proof.retained] == ["legal hold"]
        assert proof.erasure_id is not None and _count(db, Erasure) == 2
        # Nothing left to remove: the pass is reported but writes no new proof.
        [idle] = erase_due(db, world.store, later + timedelta(days=1))
        assert idle.erasure_id is None and idle.deleted_keys == [] and _count(db, Erasure) == 2
        world.store.set_legal_hold(world.keys["held"], False)
        [released] = erase_due(db, world.store, later + timedelta(days=2))
        assert released.deleted_keys == [world.keys["held"]]
        assert erase_due(db, world.store, later + timedelta(days=3)) == []  # all done


def test_explicit_erasure_before_retention_ends_is_refused(world: World) -> None:
    with world.factory() as db, pytest.raises(ErasureRefused):
        erase_person(db, world.store, world.kept, T0 + timedelta(days=3), actor="admin:1")
    with world.factory() as db:
        assert erase_due(db, world.store, T0 + timedelta(days=1)) == []  # nobody is due yet
        assert _count(db, Enrolment) == 2


def test_cli_erase_due_reports_retained_objects(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI's store runs on the real clock, long after T0: only the legal hold keeps an object.
    monkeypatch.setenv("KUZET_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["retention", "erase-due"])
    assert result.exit_code == 0, result.output
    assert "1 person(s) processed" in result.output
    assert f"kept {world.keys['held']}: legal hold" in result.output
    with world.factory() as db:
        person = db.get(Person, world.due)
        assert person is not None and person.erased_at is not None
