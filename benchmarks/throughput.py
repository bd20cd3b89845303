"""Breath tests and recorded check-ins judged per minute on the production profile with 1 vs 2 Celery
workers (issue 12).

    eval "$(scripts/s3-server env)"   # optional: S3 evidence; without it the local evidence directory
    .venv/bin/python benchmarks/throughput.py [--tests 16] [--clients 4] [--workers 1 2] [--photos 3]
    .venv/bin/python benchmarks/throughput.py --kind checkin [--checkins 6] [--clients 2]

One API node (uvicorn on 127.0.0.1, `CeleryWorkerPool`: it never loads a model) on a fresh PostgreSQL
database; `kuzet worker` processes (one pool process each, engines loaded before timing) on a queue of
their own on the local RabbitMQ, results in Redis. One person is enrolled; each breath test is a freshly
signed reading with `--photos` station frames (320x240 JPEG with the synthetic mouthpiece,
tests/api/test_breath_api.station_photos) posted by `--clients` concurrent stations over HTTP.

Printed per worker count: tests judged per minute (completed / wall time of the timed batch), and
p50 / p95 from evidence stored (the last photo or reading row written) to the verdict row, read from the
database; the CPU seconds the worker processes spent per judged test (load-independent, unlike the
rate on a shared machine); then the ratio 2 workers / 1 worker. One warm-up batch per worker count is
excluded.

`--kind checkin`: recorded check-ins handed to the real session sink (`media_server.checkin.flow.
finish_session`, as a WHIP session hands its capture over) by `--clients` concurrent sessions: the frames
a shipped-default challenge samples (2 motion steps + read digits; 15 frames/s inside the windows, 5/s
outside; 640x480 frames of the public-domain astronaut face, shifted a little each frame), its prompt
events and 16 kHz speech; the recording itself is not included (its upload is media-node work). WebRTC is
not part of this figure: `benchmarks/media_sessions.py` measures the media node.
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


def _group_cpu_s(pgids: list[int]) -> float:
    """CPU seconds (user + system) used so far by every live process of these process groups."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in pgids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


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
                    start, cpu0 = time.perf_counter(), _group_cpu_s([w.pid for w in workers])
                    sessions = list(pool.map(one, timed))
                    wall_s = time.perf_counter() - start
                    cpu_s = _group_cpu_s([w.pid for w in workers]) - cpu0
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
    return _summary(
        f"[{n_workers} worker(s)] {len(sessions)} breath tests ({args.photos} photos) by {args.clients} stations",
        "test",
        len(sessions),
        wall_s,
        cpu_s,
        lat,
    )


# ------------------------------------------------------------------ recorded check-ins
def _checkin_capture(session_id: str, person_id: str, face: Any, speech: Any, seed: int = 0) -> Any:
    """A capture of a completed check-in at the shipped liveness and sampling defaults."""
    from datetime import UTC, datetime, timedelta

    from identity.liveness.challenge import make_challenge
    from media_server.settings import Settings
    from media_server.webrtc.capture import EndedReason, SessionCapture

    settings = Settings()
    challenge = make_challenge(np.random.default_rng(seed), settings.liveness)
    windows = [
        (t - settings.liveness.baseline_s, t + s.window_s)
        for t, s in zip(challenge.planned_prompt_ts(), challenge.steps, strict=True)
    ]
    total = challenge.total_s() + 1.0
    frames, t = [], 0.0
    while t < total:
        inside = any(a <= t <= b for a, b in windows)
        shift = int(3 * np.sin(t * 2))
        frames.append((t, np.ascontiguousarray(np.roll(face, shift, axis=1))))
        t += 1.0 / settings.media.window_max_fps if inside else settings.media.sample_every_s
    events = [{"type": "prompt", "index": i, "t_s": ts} for i, ts in enumerate(challenge.planned_prompt_ts())]
    audio = np.resize(speech, int(16000 * total)).astype(np.float32)
    now = datetime.now(UTC)
    return SessionCapture(
        session_id=session_id,
        person_id=person_id,
        kind="checkin",
        device_id=None,
        challenge=challenge.to_dict(),
        recording_path=None,
        frames=frames,
        audio_pcm16k=audio,
        audio_t0_s=0.0,
        events=events,
        location={"status": "ok", "lat": 43.2389, "lon": 76.8897, "accuracy_m": 15.0, "t_s": 1.0},
        ended_reason=EndedReason.COMPLETED,
        started_at=now - timedelta(seconds=total),
        ended_at=now,
        stats={"video_frames_received": len(frames)},
    )


def _checkin_media() -> tuple[Any, Any]:
    """The astronaut face framed as a selfie (640x480 RGB) and espeak speech at 16 kHz."""
    import soundfile as sf
    from PIL import Image

    from tests.support.webrtc import make_test_media

    media = make_test_media(Path(tempfile.mkdtemp(prefix="kuzet-checkin-media-")))
    face = np.asarray(Image.open(media.video_y4m.with_name("face.png")).convert("RGB"))
    pcm48, rate = sf.read(str(media.speech_wav), dtype="float32")
    return face, pcm48[:: rate // 16000]


def _run_checkins(n_workers: int, args: argparse.Namespace) -> dict[str, float]:
    import asyncio
    from datetime import UTC, datetime, timedelta

    import httpx
    from sqlalchemy import func, select

    from media_server.app import create_app
    from media_server.checkin.flow import finish_session
    from media_server.db.enums import SessionKind, SessionStatus
    from media_server.db.models import Artifact, CheckSession, Verdict
    from tests.api.seed import create_staff
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
    from tests.e2e.e2e_service import enrolment_images
    from tests.support.webrtc import ServerThread

    face, speech = _checkin_media()
    queue = CeleryQueue(BROKER_URL, RESULT_BACKEND, f"kuzet.bench.{secrets.token_hex(4)}")
    pg_url = fresh_pg_url("kuzet_bench")
    with tempfile.TemporaryDirectory(prefix="kuzet-throughput-") as tmp:
        workers = [
            start_worker(queue, name=f"bench{i}", log_dir=Path(tmp) / "logs") for i in range(n_workers)
        ]
        try:
            for _ in workers:
                wait_worker_ready(queue)
            app = create_app(_settings(Path(tmp) / "var", pg_url, queue))
            with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=600) as client:
                services = app.state.services
                create_staff(services)
                from tests.api.conftest import PASSWORD

                token = client.post("/api/v1/auth/login", json={"username": "officer", "password": PASSWORD})
                officer = {"Authorization": f"Bearer {token.json()['token']}"}
                person = client.post(
                    "/api/v1/persons",
                    json={"external_ref": "BENCH-CK", "display_name": "Bench"},
                    headers=officer,
                ).json()["id"]
                files = [("images", (f"f{i}.png", b, "image/png")) for i, b in enumerate(enrolment_images())]
                r = client.post(f"/api/v1/persons/{person}/enrolments/face", files=files, headers=officer)
                assert r.status_code == 201 and r.json()["enrolled"], r.text

                def new_session() -> str:
                    now = datetime.now(UTC)
                    with services.sessions.begin() as db:
                        row = CheckSession(
                            person_id=person, kind=SessionKind.CHECKIN, status=SessionStatus.ACTIVE,
                            window_start=now, window_end=now + timedelta(minutes=30), started_at=now, meta={},
                        )  # fmt: skip
                        db.add(row)
                        db.flush()
                        return str(row.id)

                seeds = iter(range(10**6))

                async def batch(n: int) -> list[str]:
                    gate = asyncio.Semaphore(args.clients)

                    async def one() -> str:
                        async with gate:
                            sid = await asyncio.to_thread(new_session)
                            capture = await asyncio.to_thread(
                                _checkin_capture, sid, person, face, speech, next(seeds)
                            )
                            await finish_session(services, capture)
                            return sid

                    return list(await asyncio.gather(*(one() for _ in range(n))))

                asyncio.run(batch(args.clients))  # warm-up
                start, cpu0 = time.perf_counter(), _group_cpu_s([w.pid for w in workers])
                sessions = asyncio.run(batch(args.checkins))
                wall_s = time.perf_counter() - start
                cpu_s = _group_cpu_s([w.pid for w in workers]) - cpu0
                frames = len(_checkin_capture("-", person, face, speech).frames)
                with services.sessions() as db:
                    lat = []
                    for sid in sessions:
                        verdict = db.scalars(select(Verdict).where(Verdict.session_id == sid)).one()
                        # evidence stored: the last artifact of the capture (the verdict manifest excluded)
                        stored = db.scalar(
                            select(func.max(Artifact.created_at)).where(
                                Artifact.session_id == sid, Artifact.sha256 != verdict.manifest_sha256
                            )
                        )
                        assert stored is not None, f"check-in {sid} stored no evidence"
                        lat.append((verdict.created_at - stored).total_seconds())
        finally:
            for w in workers:
                stop_worker(w)
            drop_pg_database(pg_url)
    return _summary(
        f"[{n_workers} worker(s)] {len(sessions)} recorded check-ins ({frames} frames each) by {args.clients} "
        "sessions",
        "check-in",
        len(sessions),
        wall_s,
        cpu_s,
        lat,
    )


def _summary(what: str, unit: str, n: int, wall_s: float, cpu_s: float, lat: list[float]) -> dict[str, float]:
    """Print and return one run's throughput, worker CPU per item and stored->verdict latency."""
    ms = np.array(lat) * 1000
    per_min = n / wall_s * 60
    print(
        f"{what} in {wall_s:.1f} s: {per_min:.1f} judged/min; worker CPU {cpu_s / n:.1f} s per {unit}; "
        f"stored->verdict p50 {np.percentile(ms, 50):.0f} ms p95 {np.percentile(ms, 95):.0f} ms",
        flush=True,
    )
    return {
        "per_min": per_min,
        "cpu_s": cpu_s / n,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=16, help="timed breath tests per worker count")
    ap.add_argument("--clients", type=int, default=4, help="concurrent stations (also the warm-up batch)")
    ap.add_argument("--photos", type=int, default=3, help="photos per breath test")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    ap.add_argument("--kind", choices=["breath", "checkin", "both"], default="breath", help="what to judge")
    ap.add_argument("--checkins", type=int, default=6, help="timed recorded check-ins per worker count")
    args = ap.parse_args()
    os.environ.setdefault("C_FORCE_ROOT", "1")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs: dict[str, Any] = {}
    if args.kind in ("breath", "both"):
        photo_sets = _photo_sets(args.tests + args.clients, args.photos)
        runs["breath tests"] = lambda n: _run(n, args, photo_sets)
    if args.kind in ("checkin", "both"):
        runs["recorded check-ins"] = lambda n: _run_checkins(n, args)
    for label, run in runs.items():
        results = {n: run(n) for n in args.workers}
        print(f"\n{label}\nworkers  judged/min  worker CPU s each  p50 ms  p95 ms")
        for n, r in results.items():
            print(f"{n:7d}  {r['per_min']:10.1f}  {r['cpu_s']:17.1f}  {r['p50_ms']:6.0f}  {r['p95_ms']:6.0f}")
        if 1 in results and 2 in results:
            print(f"ratio 2/1 workers: {results[2]['per_min'] / results[1]['per_min']:.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these CPUs)")


if __name__ == "__main__":
    main()
