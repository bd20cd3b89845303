"""The schema on both backends: migrations from empty and back, the models match them, every table takes
rows, constraints hold and timestamps are UTC.

Each test runs on SQLite (a file under tmp_path) and on PostgreSQL (a fresh database per test, from
KUZET_TEST_PG_ADMIN_URL; marked `integration`, and like every PostgreSQL test it fails rather than skips
when the server is missing): the `empty_db_url` fixture of tests/conftest.py. What only one backend has
stays beside it: SQLite's pragmas and in-memory mode below, the append-only audit log in
tests/integration/test_db_postgres.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from media_server.db.engine import make_engine, make_session_factory, normalise_url
from media_server.db.enums import (
    ArtifactKind,
    Decision,
    DeviceKind,
    Modality,
    Role,
    SessionKind,
    SessionStatus,
    TemplateSource,
)
from media_server.db.migrate import current, downgrade, head_revision, upgrade
from media_server.db.models import (
    Artifact,
    AuditEntry,
    Base,
    BreathNonce,
    CheckResultRecord,
    CheckSession,
    Device,
    Enrolment,
    Erasure,
    Person,
    PhotoFingerprint,
    Review,
    Schedule,
    User,
    Verdict,
)

ALL_TABLES = {
    "persons",
    "users",
    "enrolments",
    "devices",
    "schedules",
    "sessions",
    "artifacts",
    "check_results",
    "verdicts",
    "reviews",
    "breath_nonces",
    "photo_fingerprints",
    "erasures",
    "audit_log",
    "breath_episodes",
    "signed_batches",
    "positions",
    "location_zones",
    "device_events",
    "location_alerts",
    "rejections",
    "rejection_artifacts",
    "webhook_dead_letters",
    "revoked_tokens",
}


@pytest.fixture()
def db_url(empty_db_url: str) -> str:
    """The database of this backend, migrated to head from empty."""
    assert current(empty_db_url) is None  # really fresh
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def test_upgrade_from_empty_creates_every_table_at_head(db_url: str, engine: Engine) -> None:
    assert current(db_url) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert ALL_TABLES <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent_and_downgrade_to_base_drops_everything(db_url: str, engine: Engine) -> None:
    upgrade(db_url)  # a second start-up call is a no-op
    assert current(db_url) == head_revision()
    downgrade(db_url, "base")
    assert current(db_url) is None
    assert set(inspect(engine).get_table_names()) & ALL_TABLES == set()
    upgrade(db_url)
    assert ALL_TABLES <= set(inspect(engine).get_table_names())


def test_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_required_indexes_exist(engine: Engine) -> None:
    insp = inspect(engine)

    def indexed(table: str) -> set[str]:
        return {col for ix in insp.get_indexes(table) for col in ix["column_names"] if col}

    assert "status" in indexed("sessions")
    assert "decision" in indexed("verdicts")
    for fk_table in (
        "users",
        "enrolments",
        "devices",
        "schedules",
        "sessions",
        "artifacts",
        "check_results",
        "verdicts",
        "reviews",
        "photo_fingerprints",
    ):
        for fk in insp.get_foreign_keys(fk_table):
            assert fk["constrained_columns"][0] in indexed(fk_table), (fk_table, fk)


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_sqlite_pragmas(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def _populate(session: Session) -> dict[str, str]:
    now = datetime.now(UTC)
    person = Person(external_ref="CASE-0001", display_name="Test Person")
    session.add(person)
    session.flush()
    officer = User(username="officer1", password_hash="argon2-hash", role=Role.OFFICER)
    reviewer = User(username="reviewer1", password_hash="argon2-hash", role=Role.REVIEWER)
    person_user = User(username="person1", password_hash="argon2-hash", role=Role.PERSON, person_id=person.id)
    session.add_all([officer, reviewer, person_user])
    session.flush()
    enrolment = Enrolment(
        person_id=person.id,
        modality=Modality.FACE,
        template_ciphertext=b"\x00\x01ciphertext\xff",
        template_nonce=b"\x10" * 12,
        n_samples=5,
        model_name="dlib_face_recognition_resnet",
        model_version="1",
        weights_sha256="a" * 64,
        source=TemplateSource.ENROLMENT,
    )
    breathalyzer = Device(
        serial="BR-1", kind=DeviceKind.BREATHALYZER, person_id=person.id, public_key_b64="A" * 43 + "="
    )
    station = Device(serial="AV-1", kind=DeviceKind.AV_STATION, key_hash="b" * 64)
    session.add_all([enrolment, breathalyzer, station])
    session.flush()
    schedule = Schedule(
        person_id=person.id,
        kind=SessionKind.BREATH,
        rule={"times": ["08:00", "20:00"]},
        timezone="Asia/Almaty",
        created_by=officer.id,
    )
    check_session = CheckSession(
        person_id=person.id,
        kind=SessionKind.BREATH,
        window_start=now,
        window_end=now + timedelta(hours=1),
        token_hash="c" * 64,
        device_id=breathalyzer.id,
        location={"lat": 43.24, "lon": 76.89},
        challenge={"digits": "40721"},
    )
    session.add_all([schedule, check_session])
    session.flush()
    artifact = Artifact(
        session_id=check_session.id,
        key=f"sessions/{check_session.id}/photo-0.jpg",
        sha256="d" * 64,
        size=123_456,
        content_type="image/jpeg",
        kind=ArtifactKind.PHOTO,
    )
    result = CheckResultRecord.from_check(
        check_session.id,
        CheckResult(
            CheckKind.FACE,
            Outcome.PASS,
            "match",
            "Face matches",
            score=0.42,
            threshold=0.6,
            model=ModelStamp("dlib", "1", "e" * 64),
            details={"score_unit": "distance"},
        ),
    )
    verdict = Verdict(
        session_id=check_session.id,
        decision=Decision.REVIEW,
        reasons=["face_inconclusive"],
        policy_version="1",
        thresholds={"face": 0.6},
        models={"face": "dlib"},
        manifest_sha256="f" * 64,
    )
    session.add_all([artifact, result, verdict])
    session.flush()
    review = Review(
        session_id=check_session.id,
        verdict_id=verdict.id,
        reviewer_id=reviewer.id,
        decision=Decision.PASS,
        comment="Same person, poor light.",
    )
    nonce = BreathNonce(device_id=breathalyzer.id, nonce="n-0001")
    fingerprint = PhotoFingerprint(
        artifact_id=artifact.id, session_id=check_session.id, person_id=person.id, phash="8f3c1e0a9b7d6c5e"
    )
    erasure = Erasure(
        person_id="00000000-0000-4000-8000-000000000000", counts={"enrolments": 2}, proof_sha256="0" * 64
    )
    audit_row = AuditEntry(
        ts=now,
        actor="test",
        action="raw_insert",
        subject_type="person",
        subject_id=person.id,
        details={},
        prev_hash="9" * 64,
        row_hash="9" * 64,
    )
    session.add_all([review, nonce, fingerprint, erasure, audit_row])
    session.flush()
    return {
        "person": person.id,
        "session": check_session.id,
        "device": breathalyzer.id,
        "verdict": verdict.id,
        "reviewer": reviewer.id,
        "artifact": artifact.id,
    }


def test_every_table_takes_a_row_and_values_round_trip(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        ids = _populate(session)
    with factory() as session:
        for model in (
            Person,
            User,
            Enrolment,
            Device,
            Schedule,
            CheckSession,
            Artifact,
            CheckResultRecord,
            Verdict,
            Review,
            BreathNonce,
            PhotoFingerprint,
            Erasure,
            AuditEntry,
        ):
            assert session.scalar(select(model).limit(1)) is not None, model.__tablename__
        person = session.get_one(Person, ids["person"])
        assert len(person.id) == 36 and person.timezone == "Asia/Almaty"
        assert person.created_at.tzinfo is not None and person.created_at.utcoffset() == timedelta(0)
        cs = session.get_one(CheckSession, ids["session"])
        assert cs.status is SessionStatus.SCHEDULED and cs.kind is SessionKind.BREATH
        assert cs.location == {"lat": 43.24, "lon": 76.89} and cs.meta == {}
        assert cs.window_end - cs.window_start == timedelta(hours=1)
        enrolment = session.scalars(select(Enrolment)).one()
        assert (
            enrolment.template_ciphertext == b"\x00\x01ciphertext\xff" and enrolment.modality is Modality.FACE
        )
        record = session.scalars(select(CheckResultRecord)).one()
        check = record.to_check()
        assert check.kind is CheckKind.FACE and check.outcome is Outcome.PASS
        assert check.model == ModelStamp("dlib", "1", "e" * 64) and check.details == {
            "score_unit": "distance"
        }
        raw = session.execute(text("SELECT decision FROM verdicts")).scalar_one()
        assert raw == "review"  # enums are stored as their values


def test_timestamps_are_stored_utc_and_naive_ones_refused(factory: sessionmaker[Session]) -> None:
    almaty = timezone(timedelta(hours=5))
    local = datetime(2026, 3, 1, 9, 30, tzinfo=almaty)
    with factory.begin() as session:
        person = Person(external_ref="TZ", display_name="tz", retention_until=local)
        session.add(person)
    with factory() as session:
        stored = session.get_one(Person, person.id).retention_until
        assert stored == local and stored is not None and stored.tzinfo == UTC and stored.hour == 4
    with pytest.raises(Exception, match="naive datetime refused"), factory.begin() as session:
        session.add(Person(external_ref="NAIVE", display_name="n", retention_until=datetime(2026, 1, 1)))


def test_constraints_are_enforced(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        ids = _populate(session)
    cases = [
        Enrolment(
            person_id="no-such-person",
            modality=Modality.VOICE,
            template_ciphertext=b"x",
            template_nonce=b"n",
            n_samples=1,
            model_name="m",
            model_version="1",
            weights_sha256="0" * 64,
        ),
        Person(external_ref="CASE-0001", display_name="duplicate external_ref"),
        BreathNonce(device_id=ids["device"], nonce="n-0001"),
        CheckSession(
            person_id=ids["person"],
            kind=SessionKind.CHECKIN,
            window_start=datetime.now(UTC),
            window_end=datetime.now(UTC) + timedelta(minutes=5),
            token_hash="c" * 64,
        ),
        Review(
            session_id=ids["session"],
            verdict_id=ids["verdict"],
            reviewer_id=ids["reviewer"],
            decision=Decision.FAIL,
            comment="   ",
        ),
    ]
    for row in cases:
        with pytest.raises(IntegrityError), factory.begin() as session:
            session.add(row)
            session.flush()


def test_url_normalisation_picks_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"


def test_in_memory_sqlite_shares_one_connection() -> None:
    eng = make_engine("sqlite://")
    Base.metadata.create_all(eng)
    factory = make_session_factory(eng)
    with factory.begin() as session:
        session.add(Person(external_ref="MEM", display_name="m"))
    with factory() as session:
        assert session.scalar(select(Person.external_ref)) == "MEM"
