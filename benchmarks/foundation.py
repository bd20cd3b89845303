"""Foundation figures: evidence store write/read throughput and audit-log append/verify speed.

Runs on the embedded default (local evidence directory, SQLite) and, when configured, on S3
(KUZET_S3__* as printed by `scripts/s3-server env`) and PostgreSQL (KUZET_TEST_PG_ADMIN_URL).

    .venv/bin/python benchmarks/foundation.py [--mib 32] [--appends 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from media_server.db import audit
from media_server.db.engine import make_engine, make_session_factory
from media_server.db.migrate import upgrade
from media_server.evidence import build_store
from media_server.settings import Settings


def bench_store(label: str, settings: Settings, mib: int) -> None:
    store = build_store(settings)
    big = Path(tempfile.mkdtemp()) / "big.bin"
    big.write_bytes(os.urandom(mib * 1024 * 1024))
    t0 = time.perf_counter()
    art = store.put_file(big, content_type="application/octet-stream")
    t_put = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.get_bytes(art.key)
    t_get = time.perf_counter() - t0
    small = [os.urandom(200_000) for _ in range(20)]
    times = []
    for blob in small:
        t0 = time.perf_counter()
        store.put_bytes(blob, content_type="image/jpeg")
        times.append(time.perf_counter() - t0)
    print(
        f"{label:6} put_file {mib} MiB: {t_put:.2f} s ({mib / t_put:.1f} MiB/s) | verified get: {t_get:.2f} s "
        f"({mib / t_get:.1f} MiB/s) | put_bytes 200 kB: median {1000 * statistics.median(times):.1f} ms"
    )


def bench_audit(label: str, url: str, appends: int) -> None:
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    t0 = time.perf_counter()
    for i in range(appends):
        with factory.begin() as db:
            audit.append(
                db, actor="bench", action="bench", subject_type="bench", subject_id=str(i), details={"i": i}
            )
    t_append = time.perf_counter() - t0
    with factory() as db:
        t0 = time.perf_counter()
        report = audit.verify_chain(db)
        t_verify = time.perf_counter() - t0
    print(
        f"{label:6} audit append (one commit each): {appends / t_append:.0f}/s | verify {report.rows_checked} rows: "
        f"{1000 * t_verify:.0f} ms ({'ok' if report.ok else 'BROKEN'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=32, help="size of the large artifact")
    parser.add_argument("--appends", type=int, default=300, help="audit rows to append")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    local = Settings(data_dir=tmp / "local")
    bench_store("local", local, args.mib)
    if os.environ.get("KUZET_S3__ENDPOINT"):
        s3 = Settings(data_dir=tmp / "s3", s3={"bucket": f"kuzet-bench-{uuid.uuid4().hex[:8]}"})
        bench_store("s3", s3, args.mib)
    else:
        print('s3     skipped: no KUZET_S3__ENDPOINT (run `eval "$(scripts/s3-server env)"`)')
    bench_audit("sqlite", f"sqlite:///{tmp / 'bench.db'}", args.appends)
    admin = os.environ.get("KUZET_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"kuzet_bench_{uuid.uuid4().hex[:8]}"
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"pg     skipped: {type(exc).__name__}")
        return
    try:
        bench_audit("pg", admin.rsplit("/", 1)[0] + f"/{name}", args.appends)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
