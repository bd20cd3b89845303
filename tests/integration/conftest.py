"""Integration fixtures: real services, started by the project's own scripts when not already given."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from media_server.settings import EvidenceSettings, S3Settings, Settings

REPO = Path(__file__).parents[2]
S3_SCRIPT = REPO / "scripts" / "s3-server"
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
