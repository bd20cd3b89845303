"""Shared fixtures for real services (PostgreSQL, Ceph S3), started by the project's own scripts where absent.

`fresh_pg_url()` makes a uniquely named PostgreSQL database (dropped by `drop_pg_database`); the S3
fixtures reach the Ceph RGW test server from `scripts/s3-server`. They are used by the integration tests
and by the production profile of the `api` fixture (tests/api/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from media_server.settings import EvidenceSettings, S3Settings, Settings

REPO = Path(__file__).parents[1]
S3_SCRIPT = REPO / "scripts" / "s3-server"
PG_ADMIN_URL = os.environ.get(
    "KUZET_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_S3_ENV = ("KUZET_S3__ENDPOINT", "KUZET_S3__ACCESS_KEY", "KUZET_S3__SECRET_KEY")
# the smallest part S3 accepts: an 11 MiB file becomes three parts
S3_TEST_PART_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server (Ceph RGW from scripts/s3-server) listens and how to sign in."""

    endpoint: str
    access_key: str
    secret_key: str


def _exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, _, value = word.partition("=")
                values[name] = value
    return values


def _start_s3_server() -> dict[str, str]:
    if not S3_SCRIPT.exists():
        pytest.fail(f"{', '.join(_S3_ENV)} are not set and {S3_SCRIPT} is missing")
    try:
        started = subprocess.run([S3_SCRIPT, "start"], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/s3-server start did not finish within 300 s")
    if started.returncode != 0:
        pytest.fail(f"scripts/s3-server start failed ({started.returncode}):\n{started.stderr[-4000:]}")
    env = subprocess.run([S3_SCRIPT, "env"], capture_output=True, text=True, timeout=30)
    if env.returncode != 0:
        pytest.fail(f"scripts/s3-server env failed:\n{env.stderr}")
    return _exports(env.stdout)


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """The real S3 server: from KUZET_S3__* or started with scripts/s3-server (fails, never skips)."""
    values = {name: os.environ.get(name, "") for name in _S3_ENV}
    if not all(values.values()):
        values = _start_s3_server()
    missing = [name for name in _S3_ENV if not values.get(name)]
    if missing:
        pytest.fail(f"S3 server settings missing: {missing}")
    server = S3Server(values[_S3_ENV[0]], values[_S3_ENV[1]], values[_S3_ENV[2]])
    try:
        httpx.get(f"http://{server.endpoint}/", timeout=10)
    except httpx.HTTPError as exc:
        pytest.fail(f"S3 server at {server.endpoint} does not answer: {exc}")
    return server


@pytest.fixture(scope="session")
def s3_bucket() -> str:
    """A fresh bucket name per test session: locked objects can never be deleted."""
    return f"kuzet-test-{secrets.token_hex(4)}"


@pytest.fixture
def s3_settings(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> Settings:
    """Settings for an S3 evidence store on the test server, with the spool under tmp_path."""
    return Settings(
        data_dir=tmp_path,
        s3=S3Settings(
            endpoint=s3_server.endpoint,
            access_key=SecretStr(s3_server.access_key),
            secret_key=SecretStr(s3_server.secret_key),
            bucket=s3_bucket,
            secure=False,
        ),
        evidence=EvidenceSettings(retention_days=1, multipart_part_bytes=S3_TEST_PART_BYTES),
    )


def fresh_pg_url(prefix: str = "kuzet_test") -> str:
    """Create a uniquely named, empty PostgreSQL database and return its URL (fails, never skips)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for this test: {exc}")
    finally:
        admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    """Drop a database made by `fresh_pg_url`, closing whatever connections remain."""
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    url = fresh_pg_url()
    try:
        yield url
    finally:
        drop_pg_database(url)
