"""Run the packaged Alembic migrations programmatically (the app calls `upgrade` at startup)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from media_server.db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# pg_advisory_xact_lock key that serialises concurrent `upgrade` calls (several app instances
# starting at once); distinct from the audit log's key.
MIGRATION_LOCK_KEY = 0x6B757A6574_0002


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        # ConfigParser interpolation: a URL-encoded password contains '%'.
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _run(url: str | URL, action: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            _lock(conn)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            if action == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def _lock(conn: Connection) -> None:
    # On SQLite the first DDL statement takes the write lock; PostgreSQL needs an explicit one.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`, in one transaction where the backend allows."""
    _run(url, "upgrade", revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ("base" drops everything)."""
    _run(url, "downgrade", revision)


def current(url: str | URL) -> str | None:
    """The revision the database at `url` is at (None when never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
