"""Audit-log appends per second with concurrent writers, on SQLite and PostgreSQL.

Each writer thread runs transactions shaped like `media_server.artifacts.store_artifact` (a statement of
its own, then one `audit.append`, then commit) for `--seconds`; every writer has its own connection. The
chain is verified at the end (it must never fork). Prints appends/s per writer count and the mean time
of one append transaction, for the append as shipped and, on PostgreSQL, for the earlier one (lock, head
read, INSERT through the ORM: three round trips under the lock instead of one) measured in the same run.

    .venv/bin/python benchmarks/audit_append.py [--writers 1 4 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory
from media_server.db.migrate import upgrade

Appender = Callable[..., Any]


def _earlier(
    db: Session, actor: str, action: str, subject_type: str, subject_id: str, details: dict[str, Any]
) -> None:
    audit._append_orm(db, actor, action, subject_type, subject_id, details)


def run(url: str, writers: int, seconds: float, append: Appender) -> tuple[float, float, bool]:
    """(appends/s, mean ms per append transaction, chain ok) for `writers` threads."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    stop = time.monotonic() + seconds
    counts = [0] * writers
    busy = [0.0] * writers

    def writer(k: int) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            with factory.begin() as db:
                # the caller's own row first (an artifact row in store_artifact), then the audit append
                db.execute(text("SELECT 1"))
                append(
                    db,
                    actor="bench",
                    action="evidence_stored",
                    subject_type="session",
                    subject_id=f"s-{k}-{counts[k]}",
                    details={"artifact_id": uuid.uuid4().hex, "size": 200_000},
                )
            busy[k] += time.perf_counter() - t0
            counts[k] += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    with factory() as db:
        ok = audit.verify_chain(db).ok
    engine.dispose()
    total = sum(counts)
    return total / elapsed, 1000 * sum(busy) / max(total, 1), ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    tmp = Path(tempfile.mkdtemp())
    admin = os.environ.get("KUZET_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"kuzet_bench_{uuid.uuid4().hex[:8]}"
    pg_admin = create_engine(admin, isolation_level="AUTOCOMMIT")
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    profiles = {"sqlite": f"sqlite:///{tmp / 'audit.db'}", "postgres": admin.rsplit("/", 1)[0] + f"/{name}"}
    try:
        for label, url in profiles.items():
            upgrade(url)
            variants: dict[str, Appender] = {"shipped": audit.append}
            if label == "postgres":
                variants["earlier"] = _earlier
            for n in args.writers:
                for variant, append in variants.items():
                    rate, ms, ok = run(url, n, args.seconds, append)
                    print(
                        f"{label:8} {variant:8} writers {n:2}: {rate:7.0f} appends/s | {ms:6.1f} ms per append "
                        f"transaction | chain {'ok' if ok else 'BROKEN'}"
                    )
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        pg_admin.dispose()


if __name__ == "__main__":
    main()
