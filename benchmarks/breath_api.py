"""Time to decide one breath test through the API (issue 13): p50 / p95 at concurrency 1, 4 and 16.

    .venv/bin/python benchmarks/breath_api.py [--levels 1,4,16] [--per-client 3] [--photos 3] [--no-plain]

Ours: the real app on the embedded default (SQLite + local evidence directory in a temporary directory,
its spawn worker pool with `workers.processes` processes, warmed at start) served by uvicorn on 127.0.0.1;
real HTTP. One person is enrolled from three LFW photos of Hugo Chavez; each client has its own station
(breathalyzer key) of that person and posts, one after another, freshly signed readings with `--photos`
station frames (320x240 JPEG, the synthetic mouthpiece drawn on the dlib landmarks;
tests/api/test_breath_api.station_photos) of a different LFW image each, so no request repeats an earlier
photo. Timed: the whole request, from the multipart upload to the 201 response (evidence stored,
admission, reading policy, one pool job per photo, reuse lookup, retest episode, signed manifest and
verdict). Closed loop: `c` clients each send `--per-client` requests back to back.

Plain: what a naive service would do with the same photos — one job per test on a spawn pool of the same
size that runs `face_recognition.face_encodings` on each photo in turn and compares with the enrolled
encoding (no evidence, no database, no PAD, no reuse check): a lower bound on a naive server's latency.

Also printed: the mean photo-job time the server measured (its /metrics) against the mean request time
(what is spent outside the engines), and CPU-seconds per test of the server and its workers
(/proc, all processes), which on a shared machine says more than the latencies (load printed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (/proc/<pid>/stat)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _images(n: int) -> list[str]:
    from tests.api.test_breath_api import LFW

    rels = [f"{p.parent.name}/{p.name}" for p in sorted(LFW.glob("*/*.jpg")) if "Hugo_Chavez" not in p.name]
    step = max(1, len(rels) // max(1, int(n * 1.3)))
    return rels[::step]


def _photo_sets(n: int, photos: int) -> list[tuple[bytes, ...]]:
    from tests.api.test_breath_api import station_photos

    out: list[tuple[bytes, ...]] = []
    for rel in _images(n):
        try:
            out.append(station_photos(rel, n=photos))
        except AssertionError:
            continue  # dlib finds no face to draw the mouthpiece on
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} usable LFW images for {n} requests")
    return out


def closed_loop(c: int, per_client: int, send: Callable[[int, int], str]) -> tuple[list[float], Counter[str]]:
    """`c` threads, each calling send(client, k) `per_client` times; returns latencies (s) and outcomes."""
    times: list[float] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(per_client):
            t0 = time.perf_counter()
            try:
                outcome = send(i, k)
            except Exception as exc:  # a refused request is counted, not a crashed client
                with lock:
                    outcomes[f"error: {str(exc)[:80]}"] += 1
                continue
            dt = time.perf_counter() - t0
            with lock:
                times.append(dt)
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, outcomes


def _row(label: str, c: int, times: list[float], wall: float, cpu: float | None = None) -> str:
    ms = np.array(times) * 1000
    cpu_txt = f"  CPU {cpu / len(times):5.2f} s/test" if cpu is not None else ""
    return (
        f"  {label:6s} c={c:<3d} n={len(ms):<3d} p50 {np.percentile(ms, 50):6.0f} ms  p95 "
        f"{np.percentile(ms, 95):6.0f} ms  max {ms.max():6.0f} ms  {len(ms) / wall:5.2f} tests/s{cpu_txt}"
    )


# ------------------------------------------------------------------------------------------ plain
_PLAIN: dict[str, Any] = {}


def _plain_init() -> None:
    import face_recognition

    _PLAIN["fr"] = face_recognition


def plain_test(photos: tuple[bytes, ...], enrolled: np.ndarray) -> str:
    """Naive: face_recognition on each photo in turn, match when euclidean <= 0.6 (its default)."""
    import io

    fr = _PLAIN["fr"]
    matches = 0
    for data in photos:
        encs = fr.face_encodings(fr.load_image_file(io.BytesIO(data)))
        matches += bool(encs) and float(np.linalg.norm(encs[0] - enrolled)) <= 0.6
    return "match" if matches >= 2 else "no match"


def run_plain(levels: list[int], per_client: int, sets: list[tuple[bytes, ...]], processes: int) -> list[str]:
    import multiprocessing

    import face_recognition

    from tests.api.test_breath_api import LFW

    enrolled = face_recognition.face_encodings(face_recognition.load_image_file(str(LFW / ENROL[0])))[0]
    out = []
    with ProcessPoolExecutor(
        processes, multiprocessing.get_context("spawn"), initializer=_plain_init
    ) as pool:
        for f in [pool.submit(_plain_init) for _ in range(processes)]:
            f.result()
        pool.submit(plain_test, sets[0], enrolled).result()  # warm-up
        for c in levels:
            base = 1 + sum(lv * per_client for lv in levels[: levels.index(c)])
            workers = list(pool._processes)  # noqa: SLF001 - the benchmark reads its own pool's pids
            cpu0 = _cpu_s(workers)
            t0 = time.perf_counter()
            times, _ = closed_loop(
                c,
                per_client,
                lambda i, k, base=base, c=c: pool.submit(
                    plain_test, sets[base + i * per_client + k], enrolled
                ).result(),
            )
            out.append(_row("plain", c, times, time.perf_counter() - t0, _cpu_s(workers) - cpu0))
    return out


# ------------------------------------------------------------------------------------------ ours
STAGES: dict[str, list[float]] = {}


def instrument_flow() -> None:
    """Wrap the breath flow's steps with wall-clock timers (the flow calls them by module-level name)."""
    import asyncio
    import functools
    import inspect

    from media_server.breath import flow, photos

    def timed(module: Any, name: str) -> None:
        fn = getattr(module, name)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    STAGES.setdefault(name, []).append(time.perf_counter() - t0)

            setattr(module, name, awrapper)
        else:

            @functools.wraps(fn)
            def wrapper(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    STAGES.setdefault(name, []).append(time.perf_counter() - t0)

            setattr(module, name, wrapper)

    for name in ("_route", "_store_session_evidence", "_admit", "judge_reading_and_advance", "write_verdict",
                 "_finish_session", "submit_breath_test"):  # fmt: skip
        timed(flow, name)
    for name in ("_gallery", "_judge_photos", "run_engine"):
        timed(photos, name)
    del asyncio


def run_ours(
    levels: list[int], per_client: int, sets: list[tuple[bytes, ...]]
) -> tuple[list[str], list[str], Any]:
    import logging

    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from media_server.app import create_app
    from media_server.db.enums import Role
    from media_server.settings import Settings
    from sobriety.simulator import multipart_parts, public_key_b64, sign_reading, simulated_reading
    from tests.api.conftest import PASSWORD
    from tests.api.seed import create_staff
    from tests.api.test_breath_api import LFW, MODELS_DIR
    from tests.support.webrtc import ServerThread

    rows: list[str] = []
    notes: list[str] = []
    instrument_flow()
    # One log line per client request would cost this process CPU that is counted as the server's.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kuzet-breath-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", models={"dir": MODELS_DIR.resolve()})
        app = create_app(settings)
        t_start = time.perf_counter()
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=300) as client:
            services = app.state.services
            pool = services.workers
            while len(pool.loaded) < settings.workers.processes:
                time.sleep(0.05)
            notes.append(
                f"workers warm {time.perf_counter() - t_start:.1f} s after start ({len(pool.loaded)} processes)"
            )
            create_staff(services)

            def login(role: Role) -> dict[str, str]:
                r = client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
                return {"Authorization": f"Bearer {r.json()['token']}"}

            officer, admin = login(Role.OFFICER), login(Role.ADMIN)
            person = client.post(
                "/api/v1/persons", json={"external_ref": "BENCH-1", "display_name": "Bench"}, headers=officer
            ).json()["id"]
            files = [("images", (Path(p).name, (LFW / p).read_bytes(), "image/jpeg")) for p in ENROL]
            r = client.post(f"/api/v1/persons/{person}/enrolments/face", files=files, headers=officer)
            assert r.status_code == 201 and r.json()["enrolled"], r.text
            stations = []
            for i in range(max(levels)):
                key = Ed25519PrivateKey.generate()
                serial = f"BENCH-BR-{i}"
                r = client.post(
                    "/api/v1/devices",
                    json={"serial": serial, "kind": "breathalyzer", "person_id": person,
                          "public_key_b64": public_key_b64(key)},
                    headers=admin,
                )  # fmt: skip
                assert r.status_code == 201, r.text
                stations.append((serial, key))

            def post(station: int, photos: tuple[bytes, ...]) -> str:
                serial, key = stations[station]
                reading = simulated_reading(
                    serial=serial, person_id=person, brac=0.0, unit="g/210L", n_photos=len(photos)
                )
                body, sig = sign_reading(reading, key)
                data, parts = multipart_parts(body, sig, list(photos))
                with httpx.Client(base_url=server.url, timeout=300) as own:
                    resp = own.post("/api/v1/breath-tests", data=data, files=parts)
                assert resp.status_code == 201, resp.text
                return str(resp.json()["decision"])

            t0 = time.perf_counter()
            post(0, sets[0])
            notes.append(f"first request after warm start: {(time.perf_counter() - t0) * 1000:.0f} ms")

            def job_stats() -> tuple[float, float]:
                text = client.get("/metrics").text
                got = {}
                for stat in ("sum", "count"):
                    m = re.search(
                        rf'kuzet_job_seconds_{stat}{{job="analyse_photos_job",outcome="ok"}} ([0-9.e+]+)',
                        text,
                    )
                    got[stat] = float(m.group(1)) if m else 0.0
                return got["sum"], got["count"]

            decisions: Counter[str] = Counter()
            me = os.getpid()
            for c in levels:
                base = 1 + sum(lv * per_client for lv in levels[: levels.index(c)])
                procs = [me, *pool.loaded]
                cpu0, (s0, n0) = _cpu_s(procs), job_stats()
                t0 = time.perf_counter()
                times, got = closed_loop(
                    c, per_client, lambda i, k, base=base: post(i, sets[base + i * per_client + k])
                )
                wall = time.perf_counter() - t0
                errors = sum(v for key, v in got.items() if key.startswith("error"))
                if errors:
                    notes.append(
                        f"c={c}: {errors} requests refused: {[k for k in got if k.startswith('error')]}"
                    )
                # The client threads run in this process too: their CPU is counted (a small share).
                cpu = _cpu_s(procs) - cpu0
                s1, n1 = job_stats()
                decisions.update(got)
                rows.append(_row("ours", c, times, wall, cpu))
                if n1 > n0:
                    notes.append(
                        f"c={c}: photo job mean {(s1 - s0) / (n1 - n0) * 1000:.0f} ms (as the server awaits it), "
                        f"request mean {np.mean(times) * 1000:.0f} ms"
                    )
            notes.append(
                "where a request's time goes (wall ms, mean over all levels; steps overlap with other "
                "requests): " + ", ".join(f"{k} {np.mean(v) * 1000:.0f}" for k, v in STAGES.items())
            )
            notes.append(
                "decisions (other people's faces against the enrolled person): "
                + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
            )
    return rows, notes, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,4,16", help="concurrency levels (clients)")
    ap.add_argument("--per-client", type=int, default=3, help="requests each client sends per level")
    ap.add_argument("--photos", type=int, default=3, help="photos per breath test")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain face_recognition baseline")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    total = 1 + sum(levels) * args.per_client
    sets = _photo_sets(total, args.photos)
    load0 = os.getloadavg()[0]
    rows, notes, settings = run_ours(levels, args.per_client, sets)
    plain = [] if args.no_plain else run_plain(levels, args.per_client, sets, settings.workers.processes)
    print(
        f"POST /api/v1/breath-tests, {args.photos} photos 320x240 each, embedded profile (SQLite + local "
        f"evidence, uvicorn + httpx), {settings.workers.processes} worker processes; load average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for line in rows + plain:
        print(line)
    for line in notes:
        print("  " + line)


if __name__ == "__main__":
    main()
