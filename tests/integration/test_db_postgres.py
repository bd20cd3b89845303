"""What only PostgreSQL has: the append-only audit log (triggers, the server-side row hash, the advisory
lock), timestamps under another session time zone, and the CLI against it. A fresh database per module,
dropped at the end; admin URL from KUZET_TEST_PG_ADMIN_URL (default: postgres with trust auth on
127.0.0.1:5432). Migrations, the model/migration match, constraints and the table list run on both
backends in tests/unit/test_db_schema.py.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from media_server.cli import main
from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory
from media_server.db.migrate import current, head_revision, upgrade
from media_server.db.models import GENESIS_HASH, AuditEntry, Person
from tests.conftest import drop_pg_database, fresh_pg_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """One fresh database for the module (the audit-log tests reset the log between tests)."""
    url = fresh_pg_url()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    assert current(pg_url) is None  # really fresh
    upgrade(pg_url)
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield make_session_factory(engine)
    _reset_audit_log(engine)


def _reset_audit_log(engine: Engine) -> None:
    # Tests start from an empty log; as superuser we can switch the triggers off to clean up.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM audit_log"))
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def _append_n(factory: sessionmaker[Session], n: int) -> list[AuditEntry]:
    entries = []
    for i in range(n):
        with factory.begin() as session:
            entries.append(
                audit.append(
                    session,
                    "reviewer:7",
                    "verdict_viewed",
                    "verdict",
                    f"v-{i}",
                    {"i": i, "score": 0.1 + i / 3, "big": 1e16, "nested": {"z": [True, None], "a": "қ"}},
                )
            )
    return entries


def test_the_audit_log_triggers_are_installed(engine: Engine) -> None:
    with engine.connect() as conn:
        triggers = set(
            conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"
                )
            ).scalars()
        )
    assert triggers == {"audit_log_append_only", "audit_log_no_truncate"}


def test_timestamps_come_back_utc_whatever_the_session_zone(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        session.execute(text("SET LOCAL TIME ZONE 'Asia/Almaty'"))
        person = Person(external_ref=f"PG-{secrets.token_hex(4)}", display_name="pg")
        session.add(person)
        session.flush()
        session.expire(person)
        raw = session.execute(
            text("SELECT created_at FROM persons WHERE id = :id"), {"id": person.id}
        ).scalar_one()
        assert raw.utcoffset() == timedelta(hours=5)  # the driver returns the session's zone...
        assert person.created_at.tzinfo is UTC and person.created_at == raw  # ...the model returns UTC


def test_append_and_verify(factory: sessionmaker[Session]) -> None:
    entries = _append_n(factory, 5)
    assert entries[0].prev_hash == GENESIS_HASH
    with factory() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows_checked == 5
    assert report.head == audit.AuditHead(entries[-1].id, entries[-1].row_hash)


def test_the_server_side_row_hash_is_the_documented_one(factory: sessionmaker[Session]) -> None:
    """The one-statement PostgreSQL append hashes exactly what `compute_row_hash` does, for awkward text."""
    awkward = {
        "q": 'a "quoted" \\ back\\slash',
        "u": "Қазақ тілі — ü 😀",
        "n": [1, 2.5, None, True],
        "k": {"z": 1},
    }
    with factory.begin() as session:
        written = [
            audit.append(session, 'actor "x"', "act\\ion", "type", None, awkward),
            audit.append(session, "ü", "a", "t", "@@slot@@", {"@@": "@@prev@@"}),
        ]
    with factory() as session:
        for entry in written:
            row = session.get(AuditEntry, entry.id)
            assert row is not None and row.row_hash == entry.row_hash and row.ts == entry.ts
            assert row.row_hash == audit.compute_row_hash(
                ts=row.ts,
                actor=row.actor,
                action=row.action,
                subject_type=row.subject_type,
                subject_id=row.subject_id,
                details=row.details,
                prev_hash=row.prev_hash,
            )
        assert audit.verify_chain(session).ok
    assert written[1].prev_hash == written[0].row_hash


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET details = '{}' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
        "TRUNCATE audit_log",
    ],
)
def test_trigger_refuses_edits(factory: sessionmaker[Session], engine: Engine, sql: str) -> None:
    entries = _append_n(factory, 2)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(sql), {"id": entries[0].id} if ":id" in sql else {})
    with factory() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows_checked == 2


def test_tamper_with_trigger_dropped_is_detected(
    factory: sessionmaker[Session], engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _append_n(factory, 6)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
        conn.execute(
            text("UPDATE audit_log SET details = CAST(:d AS json) WHERE id = :id"),
            {"d": '{"i": 99}', "id": entries[2].id},
        )
    try:
        with factory() as session:
            report = audit.verify_chain(session)
        assert not report.ok and report.first_bad_id == entries[2].id
        assert report.problem is audit.ChainProblem.ROW_HASH_MISMATCH

        monkeypatch.setenv("KUZET_DATABASE__URL", pg_url)
        result = CliRunner().invoke(main, ["audit", "verify"])
        assert result.exit_code == 1
        assert f"BROKEN at row {entries[2].id}" in result.output
    finally:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
                )
            )


def test_dba_bypass_deleting_a_middle_row_is_detected(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 5)
    with engine.begin() as conn:
        # What a superuser can do without touching the trigger definitions.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entries[1].id})
    with factory() as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == entries[2].id
    assert report.problem is audit.ChainProblem.PREV_HASH_MISMATCH


def test_concurrent_appends_are_serialised_by_the_advisory_lock(factory: sessionmaker[Session]) -> None:
    threads_n, per_thread = 6, 10
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with factory.begin() as session:
                    session.execute(select(AuditEntry.id).limit(1)).all()
                    audit.append(session, f"worker:{k}", "tick", "test", str(i), {"k": k, "i": i})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows_checked == threads_n * per_thread


def test_cli_db_upgrade_and_verify_ok(engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    factory = make_session_factory(engine)
    _append_n(factory, 2)
    monkeypatch.setenv("KUZET_DATABASE__URL", pg_url)
    runner = CliRunner()
    up = runner.invoke(main, ["db", "upgrade"])
    assert up.exit_code == 0 and f"revision {head_revision()}" in up.output, up.output
    result = runner.invoke(main, ["audit", "verify"])
    assert result.exit_code == 0 and "2 rows checked" in result.output, result.output
    _reset_audit_log(engine)
