"""Location monitoring on real PostgreSQL: concurrent appends keep one chain per person; a nonce admits once.

Admin URL from KUZET_TEST_PG_ADMIN_URL (default: postgres with trust auth on 127.0.0.1:5432).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from media_server.db.engine import make_engine, make_session_factory
from media_server.db.enums import DeviceKind, PositionSource
from media_server.db.migrate import upgrade
from media_server.db.models import Device, Person
from media_server.location import chain
from media_server.location.store import DbNonceLedger

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get("KUZET_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
WRITERS = 6
BATCHES_PER_WRITER = 5
FIXES_PER_BATCH = 4


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    name = f"kuzet_test_{secrets.token_hex(6)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {ADMIN_URL} is required for integration tests: {exc}")
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _person_and_device(engine: Engine) -> tuple[str, str]:
    factory = make_session_factory(engine)
    with factory.begin() as db:
        person = Person(external_ref=f"pg-{secrets.token_hex(4)}", display_name="P")
        db.add(person)
        db.flush()
        device = Device(
            serial=f"T-{secrets.token_hex(4)}",
            kind=DeviceKind.TRACKER,
            person_id=person.id,
            public_key_b64="x",
        )
        db.add(device)
        db.flush()
        return person.id, device.id


def test_concurrent_appends_make_one_unbroken_chain(engine: Engine) -> None:
    person_id, device_id = _person_and_device(engine)
    factory = make_session_factory(engine)
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    now = datetime.now(UTC)

    def writer(w: int) -> None:
        try:
            start.wait()
            for b in range(BATCHES_PER_WRITER):
                fixes = [
                    chain.NewFix(
                        now - timedelta(seconds=w * 100 + b * 10 + i), 43.2, 76.9, 10.0, PositionSource.GNSS
                    )
                    for i in range(FIXES_PER_BATCH)
                ]
                with factory.begin() as db:
                    chain.append(db, person_id, fixes, device_id=device_id, batch=None, received_at=now)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with factory() as db:
        report = chain.verify_person(db, person_id)
    assert report.ok, report.reason
    assert report.rows_checked == report.head_seq == WRITERS * BATCHES_PER_WRITER * FIXES_PER_BATCH


def test_a_nonce_is_admitted_once_under_concurrency(engine: Engine) -> None:
    _, device_id = _person_and_device(engine)
    factory = make_session_factory(engine)
    start = threading.Barrier(WRITERS)
    results: list[bool] = []
    lock = threading.Lock()

    def claim() -> None:
        start.wait()
        with factory.begin() as db:
            ok = DbNonceLedger(db).remember(device_id, "nonce-shared-0001", datetime.now(UTC))
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=claim) for _ in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [False] * (WRITERS - 1) + [True]
