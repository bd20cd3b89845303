"""Breath tests judged per minute on the production profile with 1 vs 2 Celery workers (issue 12).

    eval "$(scripts/s3-server env)"   # optional: S3 evidence; without it the local evidence directory
    .venv/bin/python benchmarks/throughput.py [--tests 16] [--clients 4] [--workers 1 2] [--photos 3]

One API node (uvicorn on 127.0.0.1, `CeleryWorkerPool`: it never loads a model) on a fresh PostgreSQL
database; `kuzet worker` processes (one pool process each, engines loaded before timing) on a queue of
their own on the local RabbitMQ, results in Redis. One person is enrolled; each breath test is a freshly
signed reading with `--photos` station frames (320x240 JPEG with the synthetic mouthpiece,
tests/api/test_breath_api.station_photos) posted by `--clients` concurrent stations over HTTP.

Printed per worker count: tests judged per minute (completed / wall time of the timed batch), and
p50 / p95 from evidence stored (the last photo or reading row written) to the verdict row, read from the
database; then the ratio 2 workers / 1 worker. One warm-up batch per worker count is excluded.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENROL = (
    "Hugo_Chavez/Hugo_Chavez_0002.jpg",
    "Hugo_Chavez/Hugo_Chavez_0027.jpg",
    "Hugo_Chavez/Hugo_Chavez_0036.jpg",
)


def _photo_sets(n: int, photos: int) -> list[tuple[bytes, ...]]:
    from tests.api.test_breath_api import LFW, station_photos

    rels = [f"{p.parent.name}/{p.name}" for p in sorted(LFW.glob("*/*.jpg")) if "Hugo_Chavez" not in p.name]
    out: list[tuple[bytes, ...]] = []
    for rel in rels[:: max(1, len(rels) // (3 * n))]:
        try:
            out.append(station_photos(rel, n=photos))
        except AssertionError:
            continue  # dlib finds no face to draw the mouthpiece on
        if len(out) == n:
            break
    return out


def _settings(data_dir: Path, pg_url: str, queue: Any) -> Any:
    from pydantic import SecretStr

    from media_server.settings import CelerySettings, S3Settings, Settings
    from tests.conftest import MODELS_DIR

    extra: dict[str, Any] = {}
    if os.environ.get("KUZET_S3__ENDPOINT"):
        extra["s3"] = S3Settings(
            endpoint=os.environ["KUZET_S3__ENDPOINT"],
            access_key=SecretStr(os.environ.get("KUZET_S3__ACCESS_KEY", "")),
            secret_key=SecretStr(os.environ.get("KUZET_S3__SECRET_KEY", "")),
            bucket=f"kuzet-bench-{secrets.token_hex(4)}",
        )
        extra["evidence"] = {"retention_days": 1}
    return Settings(
        data_dir=data_dir,
        database={"url": pg_url},
        models={"dir": MODELS_DIR},
        celery=CelerySettings(
            broker_url=queue.broker_url, result_backend=queue.result_backend, queue=queue.queue
        ),
        log_level="warning",
        **extra,
    )


def _run(n_workers: int, args: argparse.Namespace, photo_sets: list[tuple[bytes, ...]]) -> dict[str, float]:
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sqlalchemy import func, select

    from media_server.app import create_app
    from media_server.db.enums import ArtifactKind, Role
    from media_server.db.models import Artifact, Verdict
    from sobriety.simulator import multipart_parts, public_key_b64, sign_reading, simulated_reading
    from tests.api.conftest import PASSWORD
    from tests.api.seed import create_staff
    from tests.api.test_breath_api import LFW
    from tests.conftest import (
        BROKER_URL,
        RESULT_BACKEND,
        CeleryQueue,
        drop_pg_database,
        fresh_pg_url,
        start_worker,
        stop_worker,
        wait_worker_ready,
    )
    from tests.support.webrtc import ServerThread

    queue = CeleryQueue(BROKER_URL, RESULT_BACKEND, f"kuzet.bench.{secrets.token_hex(4)}")
    pg_url = fresh_pg_url("kuzet_bench")
    with tempfile.TemporaryDirectory(prefix="kuzet-throughput-") as tmp:
        workers = [
            start_worker(queue, name=f"bench{i}", log_dir=Path(tmp) / "logs") for i in range(n_workers)
        ]
        try:
            t0 = time.perf_counter()
            for _ in workers:
                wait_worker_ready(queue)
            print(f"[{n_workers} worker(s)] engines loaded in {time.perf_counter() - t0:.0f} s", flush=True)
            app = create_app(_settings(Path(tmp) / "var", pg_url, queue))
            with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=600) as client:
                services = app.state.services
                create_staff(services)

                def login(role: Role) -> dict[str, str]:
                    r = client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
                    return {"Authorization": f"Bearer {r.json()['token']}"}

                officer = login(Role.OFFICER)
                person = client.post(
                    "/api/v1/persons",
                    json={"external_ref": "BENCH-1", "display_name": "Bench"},
                    headers=officer,
                ).json()["id"]
                files = [("images", (Path(p).name, (LFW / p).read_bytes(), "image/jpeg")) for p in ENROL]
                r = client.post(f"/api/v1/persons/{person}/enrolments/face", files=files, headers=officer)
                assert r.status_code == 201 and r.json()["enrolled"], r.text
                key = Ed25519PrivateKey.generate()
                r = client.post(
                    "/api/v1/devices",
                    json={"serial": "BENCH-BR-1", "kind": "breathalyzer", "person_id": person,
                          "public_key_b64": public_key_b64(key)},
                    headers=login(Role.ADMIN),
                )  # fmt: skip
                assert r.status_code == 201, r.text

                def one(photos: tuple[bytes, ...]) -> str:
                    reading = simulated_reading(
                        serial="BENCH-BR-1", person_id=person, brac=0.0, unit="g/210L", n_photos=len(photos)
                    )
                    body, sig = sign_reading(reading, key)
                    data, parts = multipart_parts(body, sig, list(photos))
                    with httpx.Client(base_url=server.url, timeout=600) as own:
                        resp = own.post("/api/v1/breath-tests", data=data, files=parts)
                    assert resp.status_code == 201, resp.text
                    return str(resp.json()["session_id"])

                warm, timed = photo_sets[: args.clients], photo_sets[args.clients :]
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(one, warm))
                    start = time.perf_counter()
                    sessions = list(pool.map(one, timed))
                    wall_s = time.perf_counter() - start
                with services.sessions() as db:
                    lat = []
                    for sid in sessions:
                        stored = db.scalar(
                            select(func.max(Artifact.created_at)).where(
                                Artifact.session_id == sid,
                                Artifact.kind.in_([ArtifactKind.PHOTO, ArtifactKind.READING]),
                            )
                        )
                        judged = db.scalar(select(Verdict.created_at).where(Verdict.session_id == sid))
                        assert stored is not None and judged is not None
                        lat.append((judged - stored).total_seconds())
        finally:
            for w in workers:
                stop_worker(w)
            drop_pg_database(pg_url)
    ms = np.array(lat) * 1000
    per_min = len(sessions) / wall_s * 60
    print(
        f"[{n_workers} worker(s)] {len(sessions)} breath tests ({args.photos} photos) by {args.clients} stations "
        f"in {wall_s:.1f} s: {per_min:.1f} judged/min; stored->verdict p50 {np.percentile(ms, 50):.0f} ms "
        f"p95 {np.percentile(ms, 95):.0f} ms",
        flush=True,
    )
    return {
        "per_min": per_min,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=16, help="timed breath tests per worker count")
    ap.add_argument("--clients", type=int, default=4, help="concurrent stations (also the warm-up batch)")
    ap.add_argument("--photos", type=int, default=3, help="photos per breath test")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    args = ap.parse_args()
    os.environ.setdefault("C_FORCE_ROOT", "1")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    photo_sets = _photo_sets(args.tests + args.clients, args.photos)
    results = {n: _run(n, args, photo_sets) for n in args.workers}
    print("\nworkers  judged/min  p50 ms  p95 ms")
    for n, r in results.items():
        print(f"{n:7d}  {r['per_min']:10.1f}  {r['p50_ms']:6.0f}  {r['p95_ms']:6.0f}")
    if 1 in results and 2 in results:
        print(f"ratio 2/1 workers: {results[2]['per_min'] / results[1]['per_min']:.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these CPUs)")


if __name__ == "__main__":
    main()
