"""The hash-chained audit log on SQLite: append, verify, refusal of edits, and tamper detection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from media_server.cli import main
from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory, read_only
from media_server.db.migrate import head_revision, upgrade
from media_server.db.models import GENESIS_HASH, AuditEntry


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _append_n(factory: sessionmaker[Session], n: int) -> list[AuditEntry]:
    entries = []
    for i in range(n):
        with factory.begin() as session:
            entries.append(
                audit.append(
                    session,
                    "officer:1",
                    "session_viewed",
                    "session",
                    f"s-{i}",
                    {"i": i, "why": "routine", "nested": {"b": [1, 2.5, None], "a": "ü"}},
                )
            )
    return entries


def _drop_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def test_append_links_rows_and_verify_accepts_the_chain(factory: sessionmaker[Session]) -> None:
    entries = _append_n(factory, 5)
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == before.row_hash and after.id > before.id
    assert all(len(e.row_hash) == 64 for e in entries)
    recomputed = audit.compute_row_hash(
        ts=entries[2].ts,
        actor=entries[2].actor,
        action=entries[2].action,
        subject_type="session",
        subject_id="s-2",
        details=entries[2].details,
        prev_hash=entries[1].row_hash,
    )
    assert recomputed == entries[2].row_hash
    with factory() as session:
        report = audit.verify_chain(session)
        assert report.ok and report.rows_checked == 5 and report.first_bad_id is None
        assert report.head == audit.head(session) == audit.AuditHead(entries[-1].id, entries[-1].row_hash)


def test_empty_log_verifies(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows_checked == 0 and report.head is None


def test_details_are_stored_in_json_form_and_non_json_is_refused(factory: sessionmaker[Session]) -> None:
    loose: dict[Any, Any] = {"tuple": (1, 2), 3: "int key"}
    with factory.begin() as session:
        entry = audit.append(session, "cli", "x", "t", None, loose)
    assert entry.details == {"tuple": [1, 2], "3": "int key"}
    with pytest.raises(ValueError, match="not plain JSON"), factory.begin() as session:
        audit.append(session, "cli", "x", "t", None, {"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="not plain JSON"), factory.begin() as session:
        audit.append(session, "cli", "x", "t", None, {"nan": float("nan")})
    with factory() as session:
        assert audit.verify_chain(session).ok


def test_canonical_json_is_sorted_and_compact() -> None:
    assert (
        audit.canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}})
        == '{"a":{"c":"\\u00e9","d":[1,2]},"b":1}'
    )


def test_trigger_refuses_update_and_delete(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 2)
    for sql in (
        "UPDATE audit_log SET actor = 'attacker' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
    ):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql), {"id": entries[0].id})
    with factory() as session:
        assert audit.verify_chain(session).rows_checked == 2


def test_tampered_details_are_detected_at_that_row(
    factory: sessionmaker[Session], engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _append_n(factory, 6)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE audit_log SET details = json_set(details, '$.why', 'nothing to see') WHERE id = :id"
            ),
            {"id": entries[3].id},
        )
    with factory() as session:
        report = audit.verify_chain(session)
    assert not report.ok
    assert report.first_bad_id == entries[3].id
    assert report.problem is audit.ChainProblem.ROW_HASH_MISMATCH
    assert report.rows_checked == 4 and report.head == audit.AuditHead(entries[2].id, entries[2].row_hash)

    monkeypatch.setenv("KUZET_DATABASE__URL", db_url)
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN at row {entries[3].id}" in result.output


def test_rehashed_forgery_is_detected_at_the_next_row(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 4)
    _drop_triggers(engine)
    victim = entries[1]
    forged_hash = audit.compute_row_hash(
        ts=victim.ts,
        actor="someone else",
        action=victim.action,
        subject_type=victim.subject_type,
        subject_id=victim.subject_id,
        details=victim.details,
        prev_hash=victim.prev_hash,
    )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'someone else', row_hash = :h WHERE id = :id"),
            {"h": forged_hash, "id": victim.id},
        )
    with factory() as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == entries[2].id
    assert report.problem is audit.ChainProblem.PREV_HASH_MISMATCH


def test_deleted_middle_row_is_detected(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 5)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entries[2].id})
    with factory() as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == entries[3].id
    assert report.problem is audit.ChainProblem.PREV_HASH_MISMATCH


def test_truncated_tail_is_caught_by_an_anchored_head(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 3)
    with factory() as session:
        anchor = audit.head(session)
        assert anchor is not None and audit.verify_chain(session, expected_head=anchor).ok
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entries[-1].id})
    with factory() as session:
        assert audit.verify_chain(session).ok  # a shorter chain is self-consistent...
        report = audit.verify_chain(session, expected_head=anchor)
    assert not report.ok and report.problem is audit.ChainProblem.HEAD_MISMATCH  # ...but not the anchored one
    assert report.first_bad_id == entries[-1].id


def test_corrupted_json_is_reported_against_its_row(factory: sessionmaker[Session], engine: Engine) -> None:
    entries = _append_n(factory, 3)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET details = '{broken' WHERE id = :id"), {"id": entries[1].id})
    with factory() as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == entries[1].id
    assert report.problem is audit.ChainProblem.UNREADABLE


def test_concurrent_appends_never_fork_the_chain(factory: sessionmaker[Session]) -> None:
    threads_n, per_thread = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with factory.begin() as session:
                    # Read first, as a request handler would, before appending in the same transaction.
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


def test_cli_verify_ok_and_db_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("KUZET_DATABASE__URL", url)
    runner = CliRunner()
    up = runner.invoke(main, ["db", "upgrade"])
    assert up.exit_code == 0, up.output
    assert f"revision {head_revision()}" in up.output
    eng = make_engine(url)
    try:
        with make_session_factory(eng).begin() as session:
            audit.append(session, "cli", "login", "user", "u-1", {})
            audit.append(session, "cli", "logout", "user", "u-1", {})
    finally:
        eng.dispose()
    result = runner.invoke(main, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "2 rows checked" in result.output


def test_read_only_engine_verifies_while_a_writer_holds_the_lock(
    factory: sessionmaker[Session], engine: Engine
) -> None:
    _append_n(factory, 3)
    reader = make_session_factory(read_only(engine))
    with factory.begin() as writer:
        audit.append(writer, "cli", "pending", "t", None, {})  # holds SQLite's write lock until commit
        with reader() as session:
            report = audit.verify_chain(session)  # would wait for the lock under BEGIN IMMEDIATE
        assert report.ok and report.rows_checked == 3  # the uncommitted row is not visible
    with reader() as session:
        assert audit.verify_chain(session).rows_checked == 4
