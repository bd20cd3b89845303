"""Every bounded column on a real PostgreSQL: the migrated schema takes values of exactly the declared
width (and refuses one more character), and the values the code itself builds — model stamps, fused
stamps, enum values, photo hashes, audit actors, evidence keys — fit the columns they are written to.

SQLite ignores VARCHAR lengths, so only PostgreSQL can tell; the columns are read from `Base.metadata`,
so a new table or column is covered without touching this test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from identity.checks import CheckKind, CheckResult, Outcome
from identity.models import load_manifest
from identity.pad.engine import PAD_MODELS, combined_stamp
from media_server.db.engine import make_engine
from media_server.db.enums import SessionKind
from media_server.db.migrate import upgrade
from media_server.db.models import (
    PHASH_SET_HEX_LEN,
    Base,
    CheckResultRecord,
    CheckSession,
    Enrolment,
    Person,
)
from media_server.db.types import ENUM_VALUE_LENGTH, StrEnumType, UTCDateTime
from media_server.evidence.port import key_for
from sobriety.photos import phash_hex

pytestmark = pytest.mark.integration

# A two-byte UTF-8 letter: PostgreSQL's VARCHAR(n) counts characters, and so must our limits.
FILL = "ж"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    from tests.conftest import drop_pg_database, fresh_pg_url

    url = fresh_pg_url("kuzet_widths")
    upgrade(url)
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
        drop_pg_database(url)


def _width(column: Column[Any]) -> int | None:
    col_type = column.type
    if isinstance(col_type, StrEnumType):
        return int(col_type.impl.length)  # type: ignore[attr-defined]
    if isinstance(col_type, String) and not isinstance(col_type, Text) and col_type.length:
        return int(col_type.length)
    return None


def _value(column: Column[Any]) -> Any:
    """A valid value for `column`: bounded strings at their full width, everything else minimal."""
    width = _width(column)
    if width is not None:
        return FILL * width
    col_type = column.type
    if isinstance(col_type, UTCDateTime):
        return WHEN
    if isinstance(col_type, Date):
        return date(2026, 1, 1)
    if isinstance(col_type, Boolean):
        return True
    if isinstance(col_type, Integer | BigInteger):
        return 1  # satisfies the CHECK constraints (n_samples >= 1)
    if isinstance(col_type, Float):
        return 1.0
    if isinstance(col_type, LargeBinary):
        return b"\x00\x01"
    if isinstance(col_type, JSON):
        return {"k": FILL}
    if isinstance(col_type, Text):
        return FILL * 1000
    raise AssertionError(f"no test value for {column} of type {col_type!r}")


def _plain(table: Table) -> Table:
    """A copy of `table` whose enum columns are plain text, so they take and return arbitrary strings."""
    return Table(
        table.name,
        type(Base.metadata)(),
        *[Column(c.name, String() if isinstance(c.type, StrEnumType) else c.type) for c in table.columns],
    )


def _raw_insert(conn: Any, table: Table, row: dict[str, Any]) -> None:
    conn.execute(_plain(table).insert().values(**row))


def _bounded_columns() -> list[tuple[Table, Column[Any], int]]:
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            width = _width(column)
            if width is not None:
                found.append((table, column, width))
    return found


def test_every_bounded_column_takes_its_full_width_and_not_one_more(engine: Engine) -> None:
    bounded = _bounded_columns()
    assert len(bounded) >= 30, "introspection found suspiciously few bounded columns"
    rows: dict[str, dict[str, Any]] = {}
    with engine.begin() as conn:
        # One row per table, in dependency order; every foreign key holds the referenced full-width value
        # (each width is filled with the same letter, so a 36-char key equals every other 36-char key).
        for table in Base.metadata.sorted_tables:
            row = {
                c.name: _value(c)
                for c in table.columns
                if not (c.primary_key and isinstance(c.type, Integer))
            }
            _raw_insert(conn, table, row)
            rows[table.name] = row
        for table in Base.metadata.sorted_tables:
            stored = conn.execute(select(_plain(table))).one()._mapping
            for table_, column, width in bounded:
                if table_ is table:
                    assert stored[column.name] == FILL * width, f"{table.name}.{column.name}"
    refused = []
    with engine.connect() as conn:
        for table, column, width in bounded:
            if column.primary_key or column.foreign_keys:
                continue  # the key's width is proven above; one more char would only break the reference
            row = {
                c.name: _value(c)
                for c in table.columns
                if not (c.primary_key and isinstance(c.type, Integer))
            }
            row[column.name] = FILL * (width + 1)
            nested = conn.begin()
            try:
                _raw_insert(conn, table, row)
            except DataError:
                refused.append(f"{table.name}.{column.name}")
            finally:
                nested.rollback()
    expected = [f"{t.name}.{c.name}" for t, c, _ in bounded if not (c.primary_key or c.foreign_keys)]
    assert refused == expected, "PostgreSQL accepted a value wider than the model declares"


def test_values_the_code_builds_fit_their_columns(engine: Engine) -> None:
    manifest = load_manifest()
    stamps = [entry.stamp() for entry in manifest.values()]
    pad = combined_stamp([manifest[name] for name, _ in PAD_MODELS])
    stamps.append(pad)
    for table in (CheckResultRecord.__table__, Enrolment.__table__):
        name_w = _width(table.c.model_name)
        version_w = _width(table.c.model_version)
        sha_w = _width(table.c.weights_sha256)
        for stamp in stamps:
            assert name_w is not None and len(stamp.name) <= name_w, stamp
            assert version_w is not None and len(stamp.version) <= version_w, stamp
            assert sha_w is not None and len(stamp.weights_sha256) <= sha_w, stamp
    # The fused PAD stamp is the sha256 of its members' hashes: recomputable from the manifest alone.
    members = "+".join(manifest[name].sha256 or "unpinned" for name, _ in PAD_MODELS)
    assert pad.weights_sha256 == hashlib.sha256(members.encode()).hexdigest()

    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, StrEnumType):
                longest = max(len(member.value) for member in column.type.enum_cls)
                assert longest <= ENUM_VALUE_LENGTH, f"{table.name}.{column.name}"

    assert len(phash_hex([2**64 - 1] * 7)) == PHASH_SET_HEX_LEN
    audit = Base.metadata.tables["audit_log"]
    users = Base.metadata.tables["users"]
    assert len(f"user:{'u' * _width(users.c.username)!s}") <= (_width(audit.c.actor) or 0)  # type: ignore[operator]
    artifacts = Base.metadata.tables["artifacts"]
    assert len(key_for("f" * 64)) <= (_width(artifacts.c.key) or 0)

    # And the PAD result really round-trips through PostgreSQL (the 500 of issue 12).
    result = CheckResult(CheckKind.PAD, Outcome.PASS, "live", "live face", 0.9, 0.5, pad)
    with Session(engine) as db, db.begin():
        person = Person(external_ref="widths-pad", display_name="Pad Stamp")
        db.add(person)
        db.flush()
        session = CheckSession(
            person_id=person.id, kind=SessionKind.BREATH, window_start=WHEN, window_end=WHEN
        )
        db.add(session)
        db.flush()
        db.add(CheckResultRecord.from_check(session.id, result))
        session_id = session.id
    with Session(engine) as db:
        stored = db.scalars(select(CheckResultRecord).where(CheckResultRecord.session_id == session_id)).one()
        assert stored.to_check().model == pad


def test_a_session_takes_one_automatic_verdict(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    from media_server.db.enums import Decision, VerdictOrigin
    from media_server.db.models import Verdict

    with Session(engine) as db, db.begin():
        person = Person(external_ref="widths-verdict", display_name="One Verdict")
        db.add(person)
        db.flush()
        session = CheckSession(
            person_id=person.id, kind=SessionKind.BREATH, window_start=WHEN, window_end=WHEN
        )
        db.add(session)
        db.flush()
        session_id = session.id

    def verdict() -> Verdict:
        return Verdict(
            session_id=session_id, decision=Decision.PASS, policy_version="t", manifest_sha256="0" * 64
        )

    with Session(engine) as db, db.begin():
        db.add(verdict())
    with pytest.raises(IntegrityError), Session(engine) as db, db.begin():
        db.add(verdict())
    with Session(engine) as db, db.begin():  # the breath episode clock books its result beside it, once
        episode = verdict()
        episode.origin = VerdictOrigin.EPISODE_CLOCK
        db.add(episode)
    with Session(engine) as db:
        rows = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).all()
        assert sorted(v.origin.value for v in rows) == ["analysis", "episode_clock"]
