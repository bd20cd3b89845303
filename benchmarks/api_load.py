"""API under load: 50 concurrent clients on login, a read endpoint and signed breath-test submissions.

    .venv/bin/python benchmarks/api_load.py [--clients 50] [--seconds 60] [--profiles sqlite,postgres]
                                            [--workloads login,read,breath]

For each database profile the real service is started as users start it (`kuzet serve` in a subprocess,
uvicorn on 127.0.0.1, a fresh data directory; PostgreSQL gets a fresh database at
KUZET_TEST_PG_ADMIN_URL, dropped afterwards). Then, per workload, `--clients` asyncio clients (one
HTTP connection each) send requests back to back for `--seconds`:

* login  - POST /api/v1/auth/login with the right password (argon2id verification, audit row);
* read   - GET /api/v1/reviews/queue with an officer's bearer token;
* breath - POST /api/v1/breath-tests: a freshly signed reading (Ed25519, new nonce) of a registered
           breathalyzer with 3 LFW photos (the photo checks run in the service's worker pool).

Printed per profile and workload: requests, requests/s, latency p50/p95/p99, errors (a transport error or
a status other than the expected one; must be 0), and the server's RSS before and after (the uvicorn
process, and with its worker processes). Clients and server share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "load-test-password-1"
PG_ADMIN_URL = os.environ.get(
    "KUZET_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
LFW = ROOT / ".." / "shared" / "data" / "faces" / "lfw-dev"
PHOTOS_PER_TEST = 3
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0


# -- the server ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(uvicorn process, with all its descendants) resident memory in MiB."""
    own = _rss_kib(pid)
    total, todo = own, _children(pid)
    while todo:
        child = todo.pop()
        total += _rss_kib(child)
        todo.extend(_children(child))
    return own / 1024, total / 1024


@contextlib.contextmanager
def database(profile: str) -> Iterator[str]:
    """'' (SQLite under the data directory) or the URL of a fresh PostgreSQL database."""
    if profile == "sqlite":
        yield ""
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"kuzet_load_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Server:
    url: str
    pid: int
    data_dir: Path
    database_url: str


@contextlib.contextmanager
def serve(data_dir: Path, database_url: str) -> Iterator[Server]:
    """`kuzet serve` in a subprocess; stopped with SIGTERM (then SIGKILL) at the end."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KUZET_DATA_DIR": str(data_dir),
        "KUZET_DATABASE__URL": database_url,
        "KUZET_MODELS__DIR": str((ROOT / "var" / "models").resolve()),
        "KUZET_LOG_LEVEL": "warning",
    }
    log = (data_dir.parent / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "media_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "kuzet serve did not start: " + (data_dir.parent / "serve.log").read_text()[-2000:]
                )
            time.sleep(0.5)
        yield Server(url, proc.pid, data_dir, database_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- the fixture data --------------------------------------------------------------------------------


@dataclass
class World:
    officer_token: str
    serial: str
    person_id: str
    key: Any  # Ed25519PrivateKey
    photo_sets: list[list[bytes]] = field(default_factory=list)


def seed(server: Server) -> World:
    """An admin and an officer (straight into the database, as `kuzet users create` does), a person,
    a breathalyzer registered to them, and photo sets cut from LFW."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from media_server.db.engine import make_engine, make_session_factory
    from media_server.db.enums import Role
    from media_server.db.models import User
    from media_server.tokens import hash_password
    from sobriety.simulator import public_key_b64

    url = server.database_url or f"sqlite:///{(server.data_dir / 'kuzet.db').resolve()}"
    engine = make_engine(url)
    digest = hash_password(PASSWORD)
    with make_session_factory(engine).begin() as db:
        for role in (Role.ADMIN, Role.OFFICER):
            db.add(User(username=f"load-{role.value}", password_hash=digest, role=role))
    engine.dispose()
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def login(role: Role) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/login", json={"username": f"load-{role.value}", "password": PASSWORD}
            )
            r.raise_for_status()
            return {"Authorization": f"Bearer {r.json()['token']}"}

        officer = login(Role.OFFICER)
        person = client.post(
            "/api/v1/persons", headers=officer, json={"external_ref": "LOAD-1", "display_name": "Load Test"}
        )
        person.raise_for_status()
        key = Ed25519PrivateKey.generate()
        serial = f"LOAD-BR-{secrets.token_hex(3)}"
        device = client.post(
            "/api/v1/devices",
            headers=login(Role.ADMIN),
            json={
                "serial": serial,
                "kind": "breathalyzer",
                "person_id": person.json()["id"],
                "public_key_b64": public_key_b64(key),
                "calibrated_on": time.strftime("%Y-%m-%d"),
            },
        )
        device.raise_for_status()
    images = sorted(LFW.glob("*/*.jpg"))[:60]
    if len(images) < PHOTOS_PER_TEST:
        raise SystemExit(f"LFW photos not found under {LFW}")
    sets = [
        [p.read_bytes() for p in images[i : i + PHOTOS_PER_TEST]]
        for i in range(0, len(images) - PHOTOS_PER_TEST + 1, PHOTOS_PER_TEST)
    ]
    return World(officer["Authorization"].split()[1], serial, person.json()["id"], key, sets)


# -- the load --------------------------------------------------------------------------------------


@dataclass
class Result:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def workload(name: str, world: World) -> tuple[Request, int]:
    """The request one client sends in a loop, and the status that counts as success."""
    from sobriety.simulator import multipart_parts, sign_reading, simulated_reading

    if name == "login":

        async def login(client: httpx.AsyncClient, _: int) -> httpx.Response:
            return await client.post(
                "/api/v1/auth/login", json={"username": "load-officer", "password": PASSWORD}
            )

        return login, 200
    if name == "read":
        headers = {"Authorization": f"Bearer {world.officer_token}"}

        async def read(client: httpx.AsyncClient, _: int) -> httpx.Response:
            return await client.get("/api/v1/reviews/queue", headers=headers)

        return read, 200
    if name == "breath":

        async def breath(client: httpx.AsyncClient, i: int) -> httpx.Response:
            photos = world.photo_sets[i % len(world.photo_sets)]
            reading = simulated_reading(
                serial=world.serial, person_id=world.person_id, brac=0.0, unit="g/210L", n_photos=len(photos)
            )
            body, signature = sign_reading(reading, world.key)
            data, files = multipart_parts(body, signature, photos)
            return await client.post("/api/v1/breath-tests", data=data, files=files)

        return breath, 201
    raise SystemExit(f"unknown workload {name!r}")


async def run_load(url: str, request: Request, expected: int, clients: int, seconds: float) -> Result:
    result = Result()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    response = await request(client, next(counter))
                except httpx.HTTPError as exc:
                    result.errors += 1
                    result.statuses[type(exc).__name__] += 1
                    continue
                result.latencies_s.append(time.perf_counter() - t0)
                if response.status_code != expected:
                    result.errors += 1
                    # name the cause (e.g. "503 database_unavailable"): the server's log goes with its tmp dir
                    with contextlib.suppress(ValueError, AttributeError):
                        result.statuses[f"{response.status_code} {response.json().get('error')}"] += 1
                        continue
                result.statuses[str(response.status_code)] += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    result.statuses["_elapsed_ms"] = int((time.monotonic() - started) * 1000)
    return result


def report(
    profile: str, name: str, result: Result, rss: tuple[tuple[float, float], tuple[float, float]]
) -> None:
    elapsed_s = result.statuses.pop("_elapsed_ms") / 1000
    ms = np.array(result.latencies_s) * 1000 if result.latencies_s else np.zeros(1)
    n = len(result.latencies_s)
    (own0, all0), (own1, all1) = rss
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items()))
    print(
        f"{profile:8s} {name:6s} {n:6d} req  {n / elapsed_s:7.1f} req/s  "
        f"p50 {np.percentile(ms, 50):7.0f} ms  p95 {np.percentile(ms, 95):7.0f} ms  "
        f"p99 {np.percentile(ms, 99):7.0f} ms  errors {result.errors}  "
        f"RSS {own0:.0f}->{own1:.0f} MiB (with workers {all0:.0f}->{all1:.0f} MiB)  [{statuses}]",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of each workload")
    ap.add_argument("--profiles", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--workloads", default="login,read,breath", help="comma-separated: login, read, breath")
    args = ap.parse_args()

    print(
        f"{args.clients} concurrent clients, {args.seconds:g} s per workload, kuzet serve on 127.0.0.1 "
        f"(this machine: {os.cpu_count()} CPUs, shared by the clients)",
        flush=True,
    )
    failures = 0
    for profile in args.profiles.split(","):
        with tempfile.TemporaryDirectory(prefix=f"kuzet-load-{profile}-") as tmp, database(profile) as url:
            data_dir = Path(tmp) / "var"
            with serve(data_dir, url) as server:
                world = seed(server)
                for name in args.workloads.split(","):
                    request, expected = workload(name, world)
                    before = rss_mib(server.pid)
                    result = asyncio.run(run_load(server.url, request, expected, args.clients, args.seconds))
                    report(profile, name, result, (before, rss_mib(server.pid)))
                    failures += result.errors
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
