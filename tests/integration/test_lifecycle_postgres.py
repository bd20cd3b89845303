"""Migration 0006 and the life-cycle tables on a real PostgreSQL (a fresh, uniquely named database)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from media_server.db import audit
from media_server.db.enums import DeviceKind, PersonStatus, RejectionSource, SessionKind, SessionStatus
from media_server.db.migrate import current, downgrade, head_revision, upgrade
from media_server.db.models import (
    CheckSession,
    Device,
    Person,
    Rejection,
    RejectionArtifact,
    Schedule,
    WebhookDeadLetter,
)
from media_server.dead_letters import DbDeadLetters, list_dead_letters
from media_server.erasure import erase_person, verify_erasure
from media_server.lifecycle import end_supervision
from media_server.retention import retention_report
from media_server.services import Services, build_services
from media_server.settings import Settings
from media_server.webhooks import DeliveryResult
from tests.conftest import drop_pg_database, fresh_pg_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = fresh_pg_url()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture()
def services(pg_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(data_dir=tmp_path / "var", database={"url": pg_url}))
    yield built
    built.workers.shutdown()
    built.engine.dispose()


def test_migration_0006_marks_erased_rows_and_downgrades(pg_url: str) -> None:
    upgrade(pg_url, "0003")
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO persons (id, external_ref, display_name, timezone, created_at, erased_at) "
                    "VALUES ('00000000-0000-4000-8000-000000000001', 'old', 'erased', 'Asia/Almaty', now(), now())"
                )
            )
        upgrade(pg_url)
        assert current(pg_url) == head_revision()
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT status FROM persons WHERE external_ref = 'old'")).scalar_one()
                == "erased"
            )
        downgrade(pg_url, "0003")
        upgrade(pg_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM webhook_dead_letters")).scalar_one() == 0
    finally:
        engine.dispose()


def test_life_cycle_rejections_dead_letters_and_report_on_postgres(services: Services) -> None:
    with services.sessions.begin() as db:
        person = Person(external_ref=f"PG-{secrets.token_hex(3)}", display_name="Pg Person")
        db.add(person)
        db.flush()
        pid = person.id
        device = Device(serial=f"BR-{secrets.token_hex(3)}", kind=DeviceKind.BREATHALYZER, person_id=pid)
        db.add(device)
        db.add(Schedule(person_id=pid, kind=SessionKind.CHECKIN, rule={"type": "on_demand"}))
        now = datetime.now(UTC)
        db.add(
            CheckSession(
                person_id=pid,
                kind=SessionKind.CHECKIN,
                status=SessionStatus.SCHEDULED,
                window_start=now,
                window_end=now + timedelta(minutes=30),
                token_hash=secrets.token_hex(32),
                meta={},
            )
        )
        db.flush()
        stored = services.store.put_bytes(b'{"reading": 1}', content_type="application/json", metadata={})
        rejection = Rejection(
            source=RejectionSource.BREATH,
            code="bad_signature",
            message="x",
            device_id=device.id,
            person_id=pid,
        )
        db.add(rejection)
        db.flush()
        db.add(
            RejectionArtifact(
                rejection_id=rejection.id,
                key=stored.key,
                sha256=stored.sha256,
                size=stored.size,
                content_type="application/json",
                what="breath_reading",
                meta={},
            )
        )
        audit.append(db, "test", "seeded", "person", pid, {})

    with services.sessions() as db:
        out = end_supervision(
            db, pid, date.today(), actor="test", reason="served", settings=services.settings.retention
        )
    assert out["devices_revoked"] == 1 and out["schedules_revoked"] == 1 and out["links_revoked"] == 1
    with services.sessions() as db:
        report = retention_report(db, services.settings.retention, datetime.now(UTC))
        [held] = [p for p in report["persons"] if p["person_id"] == pid]
        assert held["status"] == "supervision_ended" and held["held"]["rejection_objects"] == 1

    DbDeadLetters(services.sessions, services.metrics.dead_letters).record(
        "verdict-v-1",
        "verdict",
        b'{"id":"verdict-v-1"}',
        DeliveryResult("http://x/", False, 5, 503, "HTTP 503"),
    )
    with services.sessions() as db:
        [letter] = list_dead_letters(db)
        assert isinstance(letter, WebhookDeadLetter) and letter.last_status == 503

    with services.sessions() as db:
        proof = erase_person(
            db, services.store, pid, datetime.now(UTC), actor="test", reason="request", on_request=True
        )
    # The local store keeps the object under its retention lock: the row says so, the proof still verifies.
    assert proof.counts["rejection_artifacts_retained"] == 1
    with services.sessions() as db:
        assert db.get_one(Person, pid).status is PersonStatus.ERASED
        assert verify_erasure(db, services.store, str(proof.erasure_id)).ok
        assert db.scalars(select(CheckSession.status).where(CheckSession.person_id == pid)).all() == [
            SessionStatus.CANCELLED
        ]
