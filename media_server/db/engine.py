"""Engines and session factories for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

# Execution option naming how a SQLite transaction begins: IMMEDIATE (default) or DEFERRED.
SQLITE_BEGIN_OPTION = "kuzet_sqlite_begin"
_SQLITE_BEGIN_MODES = frozenset({"IMMEDIATE", "DEFERRED"})
# How long a SQLite connection waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0


def normalise_url(url: str | URL) -> URL:
    """`postgresql://` and `postgres://` become `postgresql+psycopg://` (psycopg 3 is the driver we ship)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for `url`.

    SQLite: foreign keys on, WAL journal, a busy timeout, and real transactions that start with
    BEGIN IMMEDIATE (the driver's implicit BEGIN is switched off). IMMEDIATE takes SQLite's single
    write lock up front, so a transaction that reads and then writes waits its turn instead of
    failing with "database is locked" when another writer committed in between (Rails and Django
    made the same choice). SQLite serialises writers anyway; for long read-only work use
    `read_only(engine)`, whose transactions take no write lock. The parent directory of a file
    database is created; in-memory SQLite shares one connection. PostgreSQL: psycopg 3, pre-ping.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, echo=echo, pool_pre_ping=True)

    database = parsed.database or ""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        kwargs["poolclass"] = StaticPool
        kwargs["connect_args"]["check_same_thread"] = False
    else:
        private_database_file(Path(database).expanduser())
    engine = create_engine(parsed, echo=echo, **kwargs)
    _install_sqlite_hooks(engine)
    return engine


def private_database_file(path: Path) -> None:
    """Create the SQLite file (and a missing parent folder, 0700) as 0600 before SQLite opens it, and
    tighten an existing one: it holds password hashes and audit rows. SQLite gives its -wal and -shm
    files the database file's mode."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists() and (candidate.stat().st_mode & 0o077):
            os.chmod(candidate, 0o600)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(
                f"{SQLITE_BEGIN_OPTION} must be one of {sorted(_SQLITE_BEGIN_MODES)}, not {mode!r}"
            )
        conn.exec_driver_sql(f"BEGIN {mode}")


def read_only(engine: Engine) -> Engine:
    """The same engine and pool for long read-only work (verification, reports).

    On SQLite its transactions BEGIN DEFERRED, so they never hold the write lock and never block
    writers; on PostgreSQL it changes nothing.
    """
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """ORM sessions bound to `engine`; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
