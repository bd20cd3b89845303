"""Time to decide one breath test through the API (issue #7): p50 / p95 of POST /api/v1/breath-tests.

    .venv/bin/python benchmarks/breath_api.py [--requests 20] [--photos 3] [--http]

The real app on the embedded default (SQLite + local evidence directory in a temporary directory) with
its worker pool (`workers.processes` from the settings). One person is enrolled from three LFW photos of
Hugo Chavez; each request is a freshly signed reading with `--photos` station frames (320x240 JPEG, the
synthetic mouthpiece drawn on the dlib landmarks; tests/api/test_breath_api.station_photos) of a different
LFW image, so no request repeats an earlier photo. Timed: the whole request, from the multipart upload to
the 201 response (evidence stored, admission, reading policy, photo analysis in the worker pool, reuse
lookup, retest episode, signed manifest and verdict). One warm-up request (pool start, engine loading) is
excluded. `--http` serves the app with uvicorn on 127.0.0.1 and posts over real HTTP instead of the
in-process TestClient.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
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


class _Client:
    """TestClient or httpx against a ServerThread, behind one `post`."""

    def __init__(self, app: Any, http: bool) -> None:
        self._app = app
        self._http = http
        self._ctx: Any = None
        self.client: Any = None

    def __enter__(self) -> _Client:
        if self._http:
            import httpx

            from tests.support.webrtc import ServerThread

            self._ctx = ServerThread(self._app)
            server = self._ctx.__enter__()
            self.client = httpx.Client(base_url=server.url, timeout=120)
        else:
            from fastapi.testclient import TestClient

            self._ctx = TestClient(self._app)
            self.client = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http:
            self.client.close()
        assert self._ctx is not None
        self._ctx.__exit__(*exc)


def _images(n: int) -> list[str]:
    from tests.api.test_breath_api import LFW

    rels = [f"{p.parent.name}/{p.name}" for p in sorted(LFW.glob("*/*.jpg")) if "Hugo_Chavez" not in p.name]
    return rels[:: max(1, len(rels) // (3 * n))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20, help="timed requests")
    ap.add_argument("--photos", type=int, default=3, help="photos per breath test")
    ap.add_argument("--http", action="store_true", help="real HTTP to uvicorn instead of the TestClient")
    args = ap.parse_args()

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from media_server.app import create_app
    from media_server.db.enums import Role
    from media_server.settings import Settings
    from sobriety.simulator import multipart_parts, public_key_b64, sign_reading, simulated_reading
    from tests.api.conftest import PASSWORD
    from tests.api.seed import create_staff
    from tests.api.test_breath_api import LFW, MODELS_DIR, station_photos

    with tempfile.TemporaryDirectory(prefix="kuzet-breath-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", models={"dir": MODELS_DIR.resolve()})
        app = create_app(settings)
        with _Client(app, args.http) as c:
            client = c.client
            create_staff(app.state.services)

            def login(role: Role) -> dict[str, str]:
                r = client.post("/api/v1/auth/login", json={"username": role.value, "password": PASSWORD})
                return {"Authorization": f"Bearer {r.json()['token']}"}

            officer = login(Role.OFFICER)
            person = client.post(
                "/api/v1/persons", json={"external_ref": "BENCH-1", "display_name": "Bench"}, headers=officer
            ).json()["id"]
            files = [("images", (Path(p).name, (LFW / p).read_bytes(), "image/jpeg")) for p in ENROL]
            t0 = time.perf_counter()
            r = client.post(f"/api/v1/persons/{person}/enrolments/face", files=files, headers=officer)
            assert r.status_code == 201 and r.json()["enrolled"], r.text
            print(f"worker pool start + enrolment: {time.perf_counter() - t0:.1f} s")
            key = Ed25519PrivateKey.generate()
            r = client.post(
                "/api/v1/devices",
                json={"serial": "BENCH-BR-1", "kind": "breathalyzer", "person_id": person,
                      "public_key_b64": public_key_b64(key)},
                headers=login(Role.ADMIN),
            )  # fmt: skip
            assert r.status_code == 201, r.text

            images = _images(args.requests + 1)
            photo_sets = []
            for rel in images:
                try:
                    photo_sets.append(station_photos(rel, n=args.photos))
                except AssertionError:
                    continue  # dlib finds no face to draw the mouthpiece on
                if len(photo_sets) == args.requests + 1:
                    break
            times: list[float] = []
            decisions: Counter[str] = Counter()
            for i, photos in enumerate(photo_sets):
                reading = simulated_reading(
                    serial="BENCH-BR-1", person_id=person, brac=0.0, unit="g/210L", n_photos=len(photos)
                )
                body, sig = sign_reading(reading, key)
                data, parts = multipart_parts(body, sig, list(photos))
                t = time.perf_counter()
                r = client.post("/api/v1/breath-tests", data=data, files=parts)
                dt = time.perf_counter() - t
                assert r.status_code == 201, r.text
                if i == 0:
                    print(f"warm-up request: {dt * 1000:.0f} ms (excluded)")
                    continue
                times.append(dt)
                decisions[r.json()["decision"]] += 1

    ms = np.array(times) * 1000
    print(
        f"\nPOST /api/v1/breath-tests, {len(ms)} requests, {args.photos} photos 320x240 each, "
        f"{'uvicorn + httpx' if args.http else 'TestClient'}, SQLite + local evidence, "
        f"{settings.workers.processes} worker processes:"
    )
    print(
        f"  p50 {np.percentile(ms, 50):.0f} ms   p95 {np.percentile(ms, 95):.0f} ms   max {ms.max():.0f} ms   "
        f"mean {statistics.fmean(ms):.0f} ms"
    )
    print("  decisions (other people's faces against the enrolled person): " + ", ".join(
        f"{k} {v}" for k, v in sorted(decisions.items())
    ))  # fmt: skip


if __name__ == "__main__":
    main()
