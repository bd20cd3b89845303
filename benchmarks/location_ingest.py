"""Location monitoring throughput and alert latency (issue #17).

    .venv/bin/python benchmarks/location_ingest.py [--batches 150] [--batch-size 20] [--clients 2]
        [--trials 40] [--postgres]

The real app served by uvicorn on 127.0.0.1 (real HTTP), on the embedded default (SQLite in a temporary
directory) or, with `--postgres`, on a freshly created PostgreSQL database (KUZET_TEST_PG_ADMIN_URL,
default postgres@127.0.0.1:5432 with trust auth; dropped afterwards). Webhooks go to a local HTTP
receiver on 127.0.0.1 that stamps each delivery's arrival.

1. Ingest: `--clients` threads each post `--batches` signed batches of `--batch-size` fixes for their own
   tracker (a person with a 100 m exclusion circle 2 km away and a home inclusion polygon with night
   hours, i.e. every batch is evaluated against two zones; the track is a random walk that breaks no
   rule). Printed: position reports ingested per second (wall clock over all clients) and the p50 / p95
   latency of one batch request (admission, chain append, re-evaluation, commit).
2. Alert latency: `--trials` times, a fresh person and tracker walk into an exclusion zone, one fix per
   request (fixes 30 s apart in fix time; the default jitter rule needs 3 fixes over 60 s). Timed: from
   sending the proving (third) fix to the violation webhook's arrival at the receiver. Printed: p50 / p95.

Setup (persons, trackers, zones) goes straight to the database and is not timed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EXCLUSION_OFFSET_M = 2000.0
WALK_STEP_M = 3.0
FIX_SPACING_S = 1.0
PROOF_FIX_SPACING_S = 30
WEBHOOK_WAIT_S = 30.0


class Receiver:
    """A local webhook receiver: records (arrival perf_counter, parsed body) per delivery."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                at = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()
                with receiver.cond:
                    receiver.arrivals.setdefault(body["data"]["person_id"], at)
                    receiver.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, person_id: str, timeout_s: float) -> float | None:
        """The arrival time of the first webhook about `person_id`."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while person_id not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.arrivals[person_id]

    def close(self) -> None:
        self._server.shutdown()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    name = f"kuzet_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _setup_person(services: Any, tracker: Any, *, home_zone: bool) -> str:
    """A person, their tracker, an exclusion circle 2 km east (and a night-hours home polygon)."""
    from media_server.db.enums import DeviceKind, ZoneKind
    from media_server.db.models import Device, Person
    from media_server.location import store
    from tests.support.location import offset

    with services.sessions.begin() as db:
        person = Person(
            external_ref=f"bench-{uuid.uuid4().hex[:12]}", display_name="bench", timezone="Asia/Almaty"
        )
        db.add(person)
        db.flush()
        db.add(
            Device(
                serial=tracker.serial,
                kind=DeviceKind.TRACKER,
                person_id=person.id,
                public_key_b64=tracker.public_key_b64,
            )
        )
        lat, lon = offset(EXCLUSION_OFFSET_M, 0.0)
        store.create_zone(
            db,
            person_id=person.id,
            kind=ZoneKind.EXCLUSION,
            label="victim",
            geometry={"type": "circle", "lat": lat, "lon": lon, "radius_m": 100.0},
            hours=None,
            created_by=None,
            settings=services.settings.location,
        )
        if home_zone:
            ring = [offset(x, y) for x, y in ((-60, -60), (60, -60), (60, 60), (-60, 60))]
            store.create_zone(
                db,
                person_id=person.id,
                kind=ZoneKind.INCLUSION,
                label="home",
                geometry={"type": "polygon", "coordinates": [[p[1], p[0]] for p in ring]},
                hours={"start": "22:00", "end": "06:00"},
                created_by=None,
                settings=services.settings.location,
            )
        return str(person.id)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(args: argparse.Namespace, database_url: str) -> None:
    import httpx

    from media_server.app import create_app
    from media_server.settings import Settings
    from tests.support.location import FakeTracker, position
    from tests.support.webrtc import ServerThread

    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="kuzet-loc-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "var",
            database={"url": database_url},
            webhooks={"urls": [receiver.url], "secret": "bench"},
            log_level="warning",
        )
        app = create_app(settings)
        with ServerThread(app) as server:
            services = app.state.services
            # ------------------------------------------------------------------ ingest
            trackers = [FakeTracker(f"BENCH-{i}-{uuid.uuid4().hex[:6]}") for i in range(args.clients)]
            for tracker in trackers:
                _setup_person(services, tracker, home_zone=True)
            latencies: list[float] = []
            lock = threading.Lock()
            failures: list[str] = []

            def client(tracker: FakeTracker, seed: int) -> None:
                rng = random.Random(seed)
                x = y = 0.0
                t = datetime.now(UTC) - timedelta(seconds=args.batches * args.batch_size * FIX_SPACING_S + 60)
                with httpx.Client(base_url=server.url, timeout=60) as http:
                    for _ in range(args.batches):
                        fixes = []
                        for _ in range(args.batch_size):
                            x = max(-40.0, min(40.0, x + rng.uniform(-WALK_STEP_M, WALK_STEP_M)))
                            y = max(-40.0, min(40.0, y + rng.uniform(-WALK_STEP_M, WALK_STEP_M)))
                            t += timedelta(seconds=FIX_SPACING_S)
                            fixes.append(position(t, x, y, acc=rng.uniform(5, 25)))
                        body = tracker.positions(fixes, datetime.now(UTC))
                        start = time.perf_counter()
                        r = http.post(
                            "/api/v1/positions", content=body, headers={"Content-Type": "application/json"}
                        )
                        took = time.perf_counter() - start
                        with lock:
                            latencies.append(took)
                            if r.status_code != 201 or r.json()["alerts"]:
                                failures.append(f"{r.status_code} {r.text[:200]}")

            threads = [threading.Thread(target=client, args=(tr, i)) for i, tr in enumerate(trackers)]
            wall = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - wall
            if failures:
                raise SystemExit(f"ingest failed: {failures[:3]}")
            reports = args.clients * args.batches * args.batch_size
            backend = services.engine.url.get_backend_name()
            print(
                f"ingest ({backend}, uvicorn + httpx, {args.clients} client(s), batches of {args.batch_size}, "
                f"2 zones per person): {reports} position reports in {wall:.2f} s = {reports / wall:.0f} reports/s; "
                f"batch request p50 {1000 * statistics.median(latencies):.1f} ms, "
                f"p95 {1000 * _pct(latencies, 95):.1f} ms"
            )

            # ------------------------------------------------------------ alert latency
            delays: list[float] = []
            missing = 0
            rule = services.settings.location
            with httpx.Client(base_url=server.url, timeout=60) as http:
                for trial in range(args.trials):
                    tracker = FakeTracker(f"TRIAL-{trial}-{uuid.uuid4().hex[:6]}")
                    person_id = _setup_person(services, tracker, home_zone=False)
                    t0 = datetime.now(UTC) - timedelta(minutes=10)
                    approach = [
                        position(t0 - timedelta(seconds=60 - 10 * i), 1000 + 150 * i) for i in range(6)
                    ]
                    r = http.post("/api/v1/positions", content=tracker.positions(approach, datetime.now(UTC)))
                    assert r.status_code == 201, r.text
                    sent = 0.0
                    for k in range(rule.min_fixes):
                        fix = position(
                            t0 + timedelta(seconds=PROOF_FIX_SPACING_S * k), EXCLUSION_OFFSET_M + 5 * k
                        )
                        body = tracker.positions([fix], datetime.now(UTC))
                        sent = time.perf_counter()
                        r = http.post("/api/v1/positions", content=body)
                        assert r.status_code == 201, r.text
                        if k < rule.min_fixes - 1:
                            assert r.json()["alerts"] == [], "a violation before the proving fix"
                    arrived = receiver.wait(person_id, WEBHOOK_WAIT_S)
                    if arrived is None:
                        missing += 1
                    else:
                        delays.append(arrived - sent)
            print(
                f"proving fix -> violation webhook ({backend}, {args.trials} trials, rule: {rule.min_fixes} fixes "
                f"over >= {rule.min_duration_s:.0f} s): p50 {1000 * statistics.median(delays):.1f} ms, "
                f"p95 {1000 * _pct(delays, 95):.1f} ms, max {1000 * max(delays):.1f} ms; missing webhooks: {missing}"
            )
    receiver.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=150, help="batches per client")
    ap.add_argument("--batch-size", type=int, default=20, help="fixes per batch")
    ap.add_argument("--clients", type=int, default=2, help="concurrent trackers posting")
    ap.add_argument("--trials", type=int, default=40, help="alert-latency trials")
    ap.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database instead of SQLite")
    ap.add_argument(
        "--pg-admin-url",
        default=None,
        help=f"admin URL (default $KUZET_TEST_PG_ADMIN_URL or {PG_ADMIN_DEFAULT})",
    )
    args = ap.parse_args()
    if args.postgres:
        import os

        admin = args.pg_admin_url or os.environ.get("KUZET_TEST_PG_ADMIN_URL", PG_ADMIN_DEFAULT)
        with postgres_database(admin) as url:
            run(args, url)
    else:
        run(args, "")


if __name__ == "__main__":
    main()
