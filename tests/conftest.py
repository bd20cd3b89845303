"""Shared fixtures for real services (PostgreSQL, Ceph S3), started by the project's own scripts where absent.

`fresh_pg_url()` makes a uniquely named PostgreSQL database (dropped by `drop_pg_database`); the S3
fixtures reach the Ceph RGW test server from `scripts/s3-server`. They are used by the integration tests
and by the production profile of the `api` fixture (tests/api/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
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


# The two database backends as fixture params; PostgreSQL's is an integration test (fails, never skips).
DB_BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.integration)]


@pytest.fixture(params=DB_BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend in turn: a SQLite file in a directory that does not exist yet,
    or a fresh PostgreSQL database (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'kuzet.db'}"
        return
    url = fresh_pg_url("kuzet_db")
    try:
        yield url
    finally:
        drop_pg_database(url)


BROKER_URL = os.environ.get("KUZET_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_BACKEND = os.environ.get("KUZET_TEST_CELERY_BACKEND", "redis://127.0.0.1:6379/3")
MODELS_DIR = (REPO / "var" / "models").resolve()
WORKER_READY_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class CeleryQueue:
    """A broker, result backend and a queue of its own for one test session's `kuzet worker`s."""

    broker_url: str
    result_backend: str
    queue: str

    def env(self) -> dict[str, str]:
        """Environment for a `kuzet worker` (or `kuzet serve`) on this queue."""
        return {
            **os.environ,
            "KUZET_CELERY__BROKER_URL": self.broker_url,
            "KUZET_CELERY__RESULT_BACKEND": self.result_backend,
            "KUZET_CELERY__QUEUE": self.queue,
            "KUZET_MODELS__DIR": str(MODELS_DIR),
            "KUZET_LOG_LEVEL": "warning",
            # Celery refuses pickle as root; test machines run as root, deployments must not.
            "C_FORCE_ROOT": "1",
            "PYTHONPATH": str(REPO),
        }

    def settings(self, job_timeout_s: float = 600, **overrides: object) -> Settings:
        """Settings of an API node that sends its analysis jobs to this queue."""
        from media_server.settings import CelerySettings

        return Settings(
            celery=CelerySettings(
                broker_url=self.broker_url,
                result_backend=self.result_backend,
                queue=self.queue,
                job_timeout_s=job_timeout_s,
            ),
            models={"dir": MODELS_DIR},
            **overrides,  # type: ignore[arg-type]
        )


def start_worker(
    queue: CeleryQueue, *, concurrency: int = 1, name: str = "w1", log_dir: Path
) -> subprocess.Popen[bytes]:
    """Start `kuzet worker` on `queue` in a new process group (so a test can kill -9 it and its children)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = (log_dir / f"worker-{name}.log").open("ab")
    return subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "kuzet"),
            "worker",
            f"--concurrency={concurrency}",
            f"--hostname={name}@%h",
        ],
        env=queue.env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_worker_ready(queue: CeleryQueue, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
    """Block until a worker on `queue` has its engines loaded and answers a job."""
    from identity.voice.worker import engine_info_job
    from media_server.tasks import CeleryWorkerPool

    pool = CeleryWorkerPool(queue.settings(job_timeout_s=timeout_s))
    try:
        pool.submit_sync(engine_info_job)
    finally:
        pool.shutdown()


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group (warm shutdown), SIGKILL after 20 s."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def celery_queue() -> CeleryQueue:
    """A queue of this test session's own on the local RabbitMQ (other sessions' workers never take it)."""
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=5):
            pass
    except OSError as exc:
        pytest.fail(f"RabbitMQ at 127.0.0.1:5672 is required (scripts/services starts it): {exc}")
    return CeleryQueue(BROKER_URL, RESULT_BACKEND, f"kuzet.test.{secrets.token_hex(4)}")


@pytest.fixture(scope="session")
def celery_worker(
    celery_queue: CeleryQueue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """One `kuzet worker` (one process) on the session's queue, engines loaded."""
    proc = start_worker(celery_queue, log_dir=tmp_path_factory.mktemp("celery"))
    try:
        wait_worker_ready(celery_queue)
        yield proc
    finally:
        stop_worker(proc)
