"""Simulated check-ins at the SHIPPED defaults against the real in-process service: do genuine people pass?

A real `kuzet` app (create_app: auth, WHIP ingest, worker pool, pipeline, verdict; SQLite + local evidence
in a temporary directory) runs on 127.0.0.1 with the shipped settings (only loopback ICE is set). Each
person of ../shared/data/video is enrolled by the officer API from three frames of their own clip. Each
session is a one-time check-in link played by media_server.simulator (aiortc WHIP client): a compliant
person answers every prompt with a labelled segment of their real video at a phone's 640x480 / 480x640,
15 / 24 fps; attacks play a still, a recording that ignores the prompts, a prompt-following recording
filmed off a screen, or speech that is not the prompted digits.

Challenges are drawn from the shipped generator (identity.liveness.challenge.make_challenge with the
default settings), kept only when the person's footage holds every motion step (the clips show each
person doing only some actions). Only lp_d12 and lp_d3 can answer default challenges (they turn); the
GRID speakers cannot turn, so `--grid` adds sessions with a one-blink + read-digits challenge at the
default windows for them (a non-default challenge design, reported on its own line).

Every person is also enrolled for spoken digits (as the officer does at enrolment): each simulated person
is given the voice of one Free Spoken Digit Dataset speaker (../shared/data/voice/fsdd); the first
`--enrol-takes` takes of each digit enrol through the officer API, and at a check-in the person says the
prompted digits with that speaker's OTHER takes (held out), whatever the clip shows. The wrong-digits
attack says a string that differs in every digit in the same voice; a replay or a still says nothing.

Prints: auto-PASS rate (REVIEW counts against), per-check pass rates (blink judged), per attack kind
the share that PASSes.

    .venv/bin/python benchmarks/genuine_sessions.py --genuine 6 --attacks 1 [--grid 5]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("KUZET_SHARED_DIR", ROOT.parent / "shared"))
VIDEO_DIR = SHARED / "data" / "video"
FSDD_DIR = SHARED / "data" / "voice" / "fsdd"
PASSWORD = "benchmark-password-1"
CAMERAS = ((640, 480, 15.0), (480, 640, 15.0), (640, 480, 24.0), (480, 640, 24.0))
DEFAULT_PEOPLE = ("lp_d12", "lp_d3")


def _png(rgb: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def enrolment_frames(clip: Any) -> list[bytes]:
    """Three frames of the person's own clip: the start of a look segment, the middle, and near the end."""
    from media_server.simulator.performer import Action

    look = next(s for s in clip.segments if s.action is Action.LOOK)
    n = len(clip.frames)
    picks = [int(look.start_s * clip.fps), n // 2, max(n - 5, 0)]
    return [_png(clip.frames[min(i, n - 1)]) for i in picks]


def _wav(pcm16k: Any) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(pcm16k, dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def digit_voices(enrol_takes: int) -> dict[str, tuple[dict[str, list[Any]], dict[str, list[Any]]]]:
    """{FSDD speaker: (enrolment takes at 16 kHz, held-out takes at 48 kHz)} per digit.

    Up to `enrol_takes` takes of each digit enrol and at least one is always held out for the check-ins,
    so only speakers with two or more takes of every digit qualify (FSDD: george, jackson, theo).
    """
    from scipy.signal import resample_poly

    from identity.voice.digits_data import fsdd_takes

    out = {}
    for speaker, per_digit in sorted(fsdd_takes(FSDD_DIR).items()):
        if any(len(per_digit.get(str(d), [])) < 2 for d in range(10)):
            continue
        enrol = {d: t[: min(enrol_takes, len(t) - 1)] for d, t in per_digit.items()}
        held = {
            d: [resample_poly(np.asarray(x, np.float64), 3, 1).astype(np.float32) for x in t[len(enrol[d]) :]]
            for d, t in per_digit.items()
        }
        out[speaker] = (enrol, held)
    return out


def draw_challenge(rng: np.random.Generator, actions: set[str], settings: Any) -> Any | None:
    """A default challenge whose motion steps this person's footage can answer (None if none in 500)."""
    from identity.liveness.challenge import make_challenge

    for _ in range(500):
        c = make_challenge(rng, settings)
        if all(s.kind.value in actions for s in c.steps if s.kind.value != "read_digits"):
            return c
    return None


def blink_speak_challenge(rng: np.random.Generator, settings: Any) -> Any:
    """One blink and one read-digits step at the default windows (for people who cannot turn)."""
    from identity.liveness.challenge import Challenge, Step, StepKind

    digits = "".join(str(int(d)) for d in rng.integers(0, 10, settings.digits_min_len))
    steps = [
        Step(StepKind.BLINK, "liveness.blink", settings.motion_window_s),
        Step(StepKind.READ_DIGITS, "liveness.read_digits", settings.read_digits_window_s, digits),
    ]
    return Challenge(
        bytes(rng.integers(0, 256, 8, dtype=np.uint8)).hex(),
        tuple(steps),
        settings.lead_in_s,
        settings.step_gap_s,
    )


class Bench:
    """The service, its staff login and the enrolled people."""

    def __init__(self, data_dir: Path) -> None:
        from media_server.app import create_app
        from media_server.settings import Settings
        from tests.support.webrtc import ServerThread

        # Shipped defaults; loopback ICE is the only change (aioice never offers 127.0.0.1 otherwise).
        self.settings = Settings(data_dir=data_dir, media={"loopback_only": True})
        self.app = create_app(self.settings)
        self.server = ServerThread(self.app)
        self.people: dict[str, str] = {}
        self.voices: dict[str, dict[str, list[Any]]] = {}

    def __enter__(self) -> Bench:
        self.server.__enter__()
        self.services = self.app.state.services
        from media_server.db import audit
        from media_server.db.enums import Role
        from media_server.db.models import User
        from media_server.tokens import hash_password

        with self.services.sessions.begin() as db:
            user = User(username="officer", password_hash=hash_password(PASSWORD), role=Role.OFFICER)
            db.add(user)
            db.flush()
            audit.append(
                db, actor="benchmark", action="user_created", subject_type="user", subject_id=user.id
            )
        import httpx

        self.http = httpx.Client(base_url=self.server.url, timeout=300)
        r = self.http.post("/api/v1/auth/login", json={"username": "officer", "password": PASSWORD})
        r.raise_for_status()
        self.headers = {"Authorization": f"Bearer {r.json()['token']}"}
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.__exit__(*exc)

    def enrol(self, name: str, images: list[bytes]) -> bool:
        r = self.http.post(
            "/api/v1/persons", json={"external_ref": name, "display_name": name}, headers=self.headers
        )
        r.raise_for_status()
        pid = r.json()["id"]
        files = [("images", (f"{name}{i}.png", b, "image/png")) for i, b in enumerate(images)]
        e = self.http.post(f"/api/v1/persons/{pid}/enrolments/face", files=files, headers=self.headers)
        ok = e.status_code == 201 and bool(e.json().get("enrolled"))
        if ok:
            self.people[name] = pid
        else:
            print(f"  enrolment of {name} refused: {e.status_code} {e.text[:300]}")
        return ok

    def enrol_digits(
        self, name: str, voice: str, takes: dict[str, list[Any]], held: dict[str, list[Any]]
    ) -> bool:
        files = [
            (f"digit_{d}", (f"{voice}_{d}_{i}.wav", _wav(x), "audio/wav"))
            for d, xs in sorted(takes.items())
            for i, x in enumerate(xs)
        ]
        r = self.http.post(
            f"/api/v1/persons/{self.people[name]}/enrolments/digits", files=files, headers=self.headers
        )
        ok = r.status_code == 201 and bool(r.json().get("enrolled"))
        if ok:
            self.voices[name] = held
        else:
            print(f"  digit enrolment of {name} ({voice}) refused: {r.status_code} {r.text[:300]}")
        return ok

    def link(self, name: str, challenge: Any) -> tuple[str, str]:
        from media_server.db.models import CheckSession

        r = self.http.post(
            f"/api/v1/persons/{self.people[name]}/checkins", json={"window_minutes": 30}, headers=self.headers
        )
        r.raise_for_status()
        session_id, url = r.json()["session_id"], r.json()["url"]
        with self.services.sessions.begin() as db:
            row = db.get(CheckSession, session_id)
            row.challenge = challenge.to_dict()
        return session_id, url.rsplit("/", 1)[-1]

    def stats(self, session_id: str) -> dict[str, Any]:
        from media_server.db.models import CheckSession

        with self.services.sessions() as db:
            row = db.get(CheckSession, session_id)
            return dict((row.meta or {}).get("stats", {})) if row is not None else {}

    def verdict(self, session_id: str, timeout_s: float = 300) -> tuple[str, list[Any]]:
        from sqlalchemy import select

        from media_server.db.models import CheckResultRecord, Verdict

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.services.sessions() as db:
                v = db.scalars(select(Verdict).where(Verdict.session_id == session_id)).first()
                if v is not None:
                    rows = db.scalars(
                        select(CheckResultRecord).where(CheckResultRecord.session_id == session_id)
                    ).all()
                    return v.decision.value, [r.to_check() for r in rows]
            time.sleep(0.5)
        return "no_verdict", []


def run_one(
    bench: Bench,
    client: Any,
    clip: Any,
    mode: Any,
    challenge: Any,
    camera: tuple[int, int, float],
    seed: int,
    foreign: str | None = None,
) -> dict[str, Any]:
    from media_server.simulator.client import play_session

    session_id, token = bench.link(clip.name, challenge)
    started = time.monotonic()
    # The phone is its own process (own interpreter, own CPU share), as a real phone would be.
    run = client.submit(
        play_session,
        bench.server.url + "/whip",
        token,
        str(VIDEO_DIR),
        clip.name,
        mode.value,
        camera,
        seed,
        foreign,
        None,
        bench.voices.get(clip.name),
    ).result()
    decision, checks = bench.verdict(session_id)
    stats = bench.stats(session_id)
    # Dense (window) time of the plan: from the first baseline to the end of the last window.
    live = bench.settings.liveness
    dense_s = challenge.total_s() - max(challenge.lead_in_s - live.baseline_s, 0.0)
    return {
        "window_fps": stats.get("frames_sampled_in_windows", 0) / max(dense_s, 1e-6),
        "window_frames": stats.get("frames_sampled_in_windows", 0),
        "clip": clip.name,
        "mode": mode.value,
        "camera": f"{camera[0]}x{camera[1]}@{camera[2]:.0f}",
        "steps": [s.kind.value for s in challenge.steps],
        "decision": decision,
        "checks": checks,
        "feedback": run["feedback"],
        "seconds": time.monotonic() - started,
        "outcome_received": run["outcome"] is not None,
        "said": run.get("said", []),
    }


def show(row: dict[str, Any]) -> None:
    parts = []
    for c in sorted(row["checks"], key=lambda c: (c.kind.value, c.details.get("step", 0))):
        if c.kind.value in ("location",):
            continue
        label = c.details.get("step_kind", c.kind.value)
        extra = ""
        if c.kind.value == "pad" and c.outcome.value != "pass":
            frames = c.details.get("frames") or []
            extra = "[" + ",".join(f"{f.get('score') or 0:.2f}" for f in frames) + "]"
            extra += f"{c.score:.2f}" if c.score is not None else ""
        if c.kind.value == "spoken_digits" and c.code != "not_enrolled":
            extra = f"[{c.details.get('recognised', '')}]"
        parts.append(f"{label}={c.outcome.value}({c.code}){extra}")
    fb = Counter(row["feedback"])
    print(
        f"  {row['mode']:13} {row['clip']:12} {row['camera']:11} {row['decision']:7} {row['seconds']:5.1f}s "
        f"window {row['window_fps']:4.1f} fps "
        f"feedback={dict(fb)} | " + " ".join(parts),
        flush=True,
    )


def summarise(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    n = len(rows)
    passed = sum(r["decision"] == "pass" for r in rows)
    print(f"\n{title}: {n} sessions; auto-PASS {passed}/{n} = {passed / n:.0%} (REVIEW/FAIL count against)")
    decisions = Counter(r["decision"] for r in rows)
    print(f"  decisions: {dict(decisions)}")
    per: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for c in r["checks"]:
            key = c.details.get("step_kind") or c.kind.value
            if c.kind.value == "location":
                continue
            per[key].append(c.outcome.value)
    for key in sorted(per):
        outs = per[key]
        p = outs.count("pass")
        judged = sum(o in ("pass", "fail") for o in outs)
        print(
            f"  {key:14} pass {p}/{len(outs)} = {p / len(outs):5.0%}   judged (pass or fail) {judged}/{len(outs)} = {judged / len(outs):5.0%}   {dict(Counter(outs))}"
        )
    fps = [r["window_fps"] for r in rows]
    print(
        f"  frames kept per second inside the challenge windows: median {np.median(fps):.1f} "
        f"(min {min(fps):.1f}); the simulated phone and the server share this machine's CPUs"
    )
    fb = sum(r["feedback"].count("face_not_visible") for r in rows)
    print(f"  'face not visible' messages while the face was in view: {fb} in {n} sessions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genuine", type=int, default=6, help="genuine sessions with default challenges")
    ap.add_argument("--attacks", type=int, default=1, help="sessions per attack kind")
    ap.add_argument("--grid", type=int, default=0, help="genuine GRID sessions (blink + read digits)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--enrol-takes", type=int, default=3, help="FSDD takes per digit that enrol")
    ap.add_argument("--no-digits", action="store_true", help="do not enrol spoken digits (the old setup)")
    args = ap.parse_args()

    from identity.liveness.config import LivenessSettings
    from media_server.simulator.performer import Mode, load_clip, load_labels

    labels = load_labels()
    clips = {name: load_clip(VIDEO_DIR / f"{name}.mp4", segs) for name, segs in labels.items()}
    live = LivenessSettings()
    rng = np.random.default_rng(args.seed)
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="kuzet-genuine-") as tmp,
        Bench(Path(tmp) / "var") as bench,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as client,
    ):
        s = bench.settings
        print(
            f"service: shipped defaults; media.window_max_fps={s.media.window_max_fps} "
            f"sample_every_s={s.media.sample_every_s} max_sampled_frames={s.media.max_sampled_frames}; "
            f"liveness motion_window_s={live.motion_window_s} read_digits_window_s={live.read_digits_window_s} "
            f"min_fps_blink={live.min_fps_blink} av_sync_decides={live.av_sync_decides}"
        )
        wanted = list(DEFAULT_PEOPLE) + ([n for n in clips if n.startswith("grid_")] if args.grid else [])
        for name in wanted:
            bench.enrol(name, enrolment_frames(clips[name]))
        voices = {} if args.no_digits else digit_voices(args.enrol_takes)
        for k, name in enumerate(n for n in wanted if n in bench.people and voices):
            speaker = sorted(voices)[k % len(voices)]
            if bench.enrol_digits(name, speaker, *voices[speaker]):
                print(f"  {name} speaks with FSDD {speaker}'s voice")
        print(
            f"spoken digits enrolled: {len(bench.voices)} of {len(bench.people)} people "
            f"(up to {args.enrol_takes} FSDD takes per digit, at least one held out for the check-ins)"
        )
        genuine: list[dict[str, Any]] = []
        grid_rows: list[dict[str, Any]] = []
        attacks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        people = [n for n in DEFAULT_PEOPLE if n in bench.people]
        print("\nsessions:")
        for i in range(args.genuine):
            name = people[i % len(people)]
            clip = clips[name]
            challenge = draw_challenge(rng, {a.value for a in clip.actions()}, live)
            row = run_one(
                bench,
                client,
                clip,
                Mode.GENUINE,
                challenge,
                CAMERAS[(i + i // 2) % len(CAMERAS)],
                args.seed + i,
            )
            show(row)
            genuine.append(row)
        grid_people = [
            n
            for n in bench.people
            if n.startswith("grid_") and "blink" in {a.value for a in clips[n].actions()}
        ]
        for i in range(args.grid if grid_people else 0):
            name = grid_people[i % len(grid_people)]
            row = run_one(
                bench,
                client,
                clips[name],
                Mode.GENUINE,
                blink_speak_challenge(rng, live),
                CAMERAS[i % len(CAMERAS)],
                100 + i,
            )
            show(row)
            grid_rows.append(row)
        if "lp_d12" in bench.people:
            d12 = clips["lp_d12"]
            for i in range(args.attacks):
                camera = CAMERAS[i % len(CAMERAS)]
                for mode in (Mode.STILL, Mode.REPLAY, Mode.SCREEN):
                    challenge = draw_challenge(rng, {a.value for a in d12.actions()}, live)
                    row = run_one(bench, client, d12, mode, challenge, camera, 200 + i)
                    show(row)
                    attacks[mode.value].append(row)
        speakers = [n for n in grid_people]
        if speakers:
            for i in range(args.attacks):
                name = speakers[i % len(speakers)]
                other = clips[speakers[(i + 1) % len(speakers)]]
                for mode in (Mode.WRONG_DIGITS, Mode.FOREIGN_AUDIO):
                    row = run_one(
                        bench,
                        client,
                        clips[name],
                        mode,
                        blink_speak_challenge(rng, live),
                        CAMERAS[i % len(CAMERAS)],
                        300 + i,
                        foreign=other.name,
                    )
                    show(row)
                    attacks[mode.value].append(row)
        summarise("genuine, default challenges (lp_d12, lp_d3)", genuine)
        summarise("genuine GRID speakers, blink + read-digits challenge", grid_rows)
        print("\nattacks: share that PASSes (target 0)")
        for kind, rows in attacks.items():
            p = sum(r["decision"] == "pass" for r in rows)
            print(f"  {kind:14} {p}/{len(rows)} PASS; decisions {dict(Counter(r['decision'] for r in rows))}")
        if not attacks.get("wrong_digits"):
            print("  wrong_digits   not run (needs --grid: only the GRID clips have speech)")


if __name__ == "__main__":
    main()
