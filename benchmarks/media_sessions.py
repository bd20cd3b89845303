"""Concurrent real check-ins through the real service: frame loss, recording gaps, CPU, verdict latency.

The service (`create_app`: SQLite, local evidence store, the local worker pool doing live analysis, the
real verdict path) runs in this process. Each phone is its own process: the project's simulator
(`media_server.simulator`) plays a real clip from ../shared/data/video (lp_d12 and lp_d3:
letterboxed to 640x480 at 15 fps, with its own audio) and answers the shipped-default challenge's
prompts with labelled segments of the clip. People are enrolled from 3 frames of their clip first.

For each level (1, 2, 4, 8 concurrent sessions started together) it prints: frames the phones sent vs
frames the server decoded ("undecoded%": this includes the tail the phone sends between the server closing
the capture and the phone hearing "processing", so it is an upper bound on loss), the network loss proper
(RTP packets missing inside the stream, and the recording gaps they make, from the remuxer's sequence
numbers), frames missing from the recording (decoded but not recorded), frames sampled and analysed per session, server-side CPU-seconds per session (this
process + the analysis workers, not the phones), verdict latency after the person stops (the
server's "processing" message to the outcome message, on the phone) p50/p95, and how many offers
admission control refused (503 + Retry-After; the phone retries like the check-in page). Server RSS is
printed idle before the run, at its peak, and idle after it.

    .venv/bin/python benchmarks/media_sessions.py [--levels 1 2 4 8] [--no-admission] [--memory-report]
        [--malloc-mmap-threshold-kb KB]

--no-admission lifts media.max_live_sessions, to see where the node breaks without it (that is how the
shipped default was chosen). --memory-report traces the server's Python allocations from the idle point on
(tracemalloc: slower, and its own tables count in the RSS) and prints, after the run, what is left: sessions
still registered, live peer connections and sessions, the traced growth by file:line, live objects gained by
type, malloc's in-use/free bytes over all arenas, pymalloc arenas, and RSS by kind of mapping. The machine is shared: say what else was running (the load is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
# The clips whose labelled actions answer every shipped challenge (head turns and blinks).
CLIPS = ("lp_d12", "lp_d3")
CAMERA = (640, 480, 15.0)
RETRY_FOR_S = 300.0
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc readings (no psutil here) ---------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    return _cpu_s_path(Path(f"/proc/{pid}/stat"))


def _cpu_s_path(stat: Path) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return 0.0


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE / 2**20
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


class Meter:
    """Server process and its analysis workers (children that are not phones): CPU and RSS.

    The meter's own thread (it scans /proc) runs in the server process: its CPU time is subtracted
    from the server's, and the server's CPU is also broken down by thread (`by_thread`)."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.phones: set[int] = set()
        self.peak_server_mb = 0.0
        self.peak_workers_mb = 0.0
        self.own_cpu_s = 0.0
        self._threads: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def workers(self) -> list[int]:
        return [p for p in _children(self.me) if p not in self.phones]

    def cpu_s(self) -> tuple[float, float]:
        """CPU-seconds so far of (this process less the meter's own thread, the analysis workers)."""
        with self._lock:
            own = self.own_cpu_s
        return _cpu_s(self.me) - own, sum(_cpu_s(p) for p in self.workers())

    def rss(self) -> tuple[float, float]:
        return _rss_mb(self.me), sum(_rss_mb(p) for p in self.workers())

    def by_thread(self) -> dict[str, float]:
        """CPU-seconds of the server's threads so far, by what they run (ended threads included)."""
        self._sample_threads()
        out: dict[str, float] = {}
        with self._lock:
            for name, cpu in self._threads.values():
                out[name] = out.get(name, 0.0) + cpu
        return out

    def _sample_threads(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for task in Path(f"/proc/{self.me}/task").iterdir():
            tid = int(task.name)
            cpu = _cpu_s_path(task / "stat")
            with self._lock:
                known = self._threads.get(tid)
                name = names.get(tid) or (known[0] if known else "native")
                if "(" in name:  # "Thread-7 (decoder_worker)" -> "decoder_worker"
                    name = name.split("(", 1)[1].rstrip(")")
                name = "main" if tid == self.me else name.split("_")[0] if name[:1].isupper() else name
                self._threads[tid] = (name, max(cpu, known[1] if known else 0.0))

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            server, workers = self.rss()
            self.peak_server_mb = max(self.peak_server_mb, server)
            self.peak_workers_mb = max(self.peak_workers_mb, workers)
            self._sample_threads()
            with self._lock:
                self.own_cpu_s = time.thread_time()

    def __enter__(self) -> Meter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class MemoryReport:
    """What the run left in the server process: Python allocations by line and live objects by type.

    Started once the server is idle (people enrolled), read after every session has ended and been
    released; what tracemalloc does not see (native heap: codecs, numpy buffers freed to malloc's
    arenas) is the difference between the RSS growth and the traced growth."""

    def __init__(self) -> None:
        import gc
        import tracemalloc

        from media_server.webrtc.heap import mallinfo

        gc.collect()
        self._types = self._type_counts()
        self._heap = mallinfo()
        self._threads = threading.active_count()
        self._maps = _rss_by_mapping()
        self._pymalloc = _pymalloc_arenas()
        tracemalloc.start(12)
        self._before = tracemalloc.take_snapshot()

    @staticmethod
    def _type_counts() -> dict[str, int]:
        import gc

        counts: dict[str, int] = {}
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def print(self, app: Any, top: int = 25) -> None:
        import gc
        import tracemalloc

        from media_server.webrtc.heap import mallinfo

        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        ingest = getattr(app.state, "whip_ingest", None)
        if ingest is not None:
            print(
                f"memory: sessions registered {len(ingest.sessions)}, ended states kept {len(ingest._ended)}"
            )
        diff = after.compare_to(self._before, "lineno")
        grown = sum(d.size_diff for d in diff)
        print(f"memory: traced Python allocations grew {grown / 2**20:+.1f} MB; top by file:line:")
        for d in diff[:top]:
            frame = d.traceback[0]
            print(
                f"  {d.size_diff / 2**10:+9.0f} KiB {d.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}"
            )
        for d in after.compare_to(self._before, "traceback")[:2]:
            print(f"  {d.size_diff / 2**10:+.0f} KiB {d.count_diff:+d} blocks made at (innermost last):")
            for line in d.traceback.format()[-16:]:
                print(f"    {line}")
        heap = mallinfo()
        if heap and self._heap:
            print(
                "memory: malloc heap (all arenas) in use "
                f"{self._heap['uordblks'] / 2**20:.0f} -> {heap['uordblks'] / 2**20:.0f} MB, free in arenas "
                f"{self._heap['fordblks'] / 2**20:.0f} -> {heap['fordblks'] / 2**20:.0f} MB, mmapped "
                f"{self._heap['hblkhd'] / 2**20:.0f} -> {heap['hblkhd'] / 2**20:.0f} MB, arena total "
                f"{self._heap['arena'] / 2**20:.0f} -> {heap['arena'] / 2**20:.0f} MB"
            )
        maps = _rss_by_mapping()
        print(
            "memory: RSS by mapping (MB, idle -> after): "
            + ", ".join(
                f"{k} {self._maps.get(k, 0) / 1024:.0f} -> {v / 1024:.0f}" for k, v in sorted(maps.items())
            )
        )
        print(f"memory: pymalloc arenas (1 MiB each): {self._pymalloc} -> {_pymalloc_arenas()}")
        print(
            f"memory: threads {self._threads} -> {threading.active_count()} "
            f"({', '.join(sorted(t.name for t in threading.enumerate()))})"
        )
        types = self._type_counts()
        changed = sorted(
            ((name, n - self._types.get(name, 0)) for name, n in types.items()),
            key=lambda kv: -kv[1],
        )
        print("memory: live objects gained by type (gc-tracked):")
        for name, n in changed[:top]:
            if n > 0:
                print(f"  {n:+7d}  {name}")
        for name in (
            "aiortc.rtcpeerconnection.RTCPeerConnection",
            "media_server.webrtc.session.MediaSession",
        ):
            print(f"memory: live {name}: {types.get(name, 0)}")


def _rss_by_mapping() -> dict[str, int]:
    """Resident kB of this process by kind of mapping: the brk heap, other anonymous memory (malloc's
    thread arenas and large chunks, pymalloc arenas, thread stacks), shared libraries, other files."""
    out: dict[str, int] = {}
    kind = "anon"
    with contextlib.suppress(OSError), open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=6)
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                path = head[5].strip() if len(head) > 5 else ""
                kind = (
                    "anon"
                    if not path
                    else "brk heap"
                    if path == "[heap]"
                    else "libs"
                    if ".so" in path
                    else "stack"
                    if path.startswith("[stack")
                    else "files"
                    if path.startswith("/")
                    else "other"
                )
            elif line.startswith("Rss:"):
                out[kind] = out.get(kind, 0) + int(line.split()[1])
    return out


def _pymalloc_arenas() -> str:
    """pymalloc's arena counts (from sys._debugmallocstats, which writes to fd 2)."""
    import re

    with tempfile.TemporaryFile("w+") as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    found = dict(re.findall(r"# arenas (allocated current|highwater mark)\s*=\s*([\d,]+)", text))
    return f"{found.get('allocated current', '?')} now (highwater {found.get('highwater mark', '?')})"


# --- the phone (a child process) -------------------------------------------------------------------


def _phone(url: str, token: str, clip: str, seed: int, retry_after_s: float, results: Any) -> None:
    import asyncio

    try:
        results.put(asyncio.run(_phone_session(url, token, clip, seed, retry_after_s)))
    except Exception as exc:
        results.put({"token": token, "error": f"{type(exc).__name__}: {exc}"})


async def _phone_session(url: str, token: str, clip: str, seed: int, retry_after_s: float) -> dict[str, Any]:
    import asyncio

    import numpy as np

    from media_server.simulator.client import CameraSpec, PerformerAudio, PerformerVideo, _cached_clip, _Clock
    from media_server.simulator.performer import Mode, Performer
    from media_server.station_client import WhipClient, WhipError

    refused = 0
    waited = 0.0
    started = time.monotonic()
    while True:
        rng = np.random.default_rng(seed)
        performer = Performer(_cached_clip(str(VIDEO_DIR), clip), Mode.GENUINE, rng, reaction_s=0.6)
        clock = _Clock()
        video = PerformerVideo(performer, CameraSpec(*CAMERA), clock, seed)
        audio = PerformerAudio(performer, clock)
        client = WhipClient(url, token, loopback_only=True)
        try:
            await client.publish([video, audio])
            break
        except WhipError as exc:
            await client.close()
            video.stop()
            audio.stop()
            if exc.status != 503 or time.monotonic() - started > RETRY_FOR_S:
                raise
            refused += 1
            await asyncio.sleep(retry_after_s)
            waited += retry_after_s
    t_processing = t_outcome = None
    outcome: dict[str, Any] | None = None
    try:
        await asyncio.wait_for(client.channel_open.wait(), 30)
        client.send({"type": "location", "lat": 43.2389, "lon": 76.8897, "accuracy_m": 25.0})
        while True:
            message = await asyncio.wait_for(client.messages.get(), 120)
            kind = message.get("type")
            if kind == "prompt":
                step = str(message.get("step", ""))
                performer.on_prompt(clock.now(), step)
                client.send({"type": "ack", "step": step, "index": message.get("index")})
            elif kind == "status" and message.get("state") == "processing":
                t_processing = time.monotonic()
                video.stop()  # the person stops: nothing more is sent
            elif kind == "outcome":
                t_outcome = time.monotonic()
                outcome = message
                break
        await client.delete()
    finally:
        await client.close()
        video.stop()
        audio.stop()
    return {
        "token": token,
        "sent": video._n,
        "refused": refused,
        "waited_s": waited,
        "latency_s": (t_outcome - t_processing) if t_processing and t_outcome else None,
        "decision": (outcome or {}).get("decision"),
        "reasons": list((outcome or {}).get("reasons") or []),
    }


# --- setup through the real API --------------------------------------------------------------------


def _png(rgb: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


class _ClipLabels:
    """What the challenge choice needs of a clip (its labelled actions), without its frames."""

    def __init__(self, clip: Any) -> None:
        self._actions = clip.actions()

    def actions(self) -> Any:
        return self._actions


def _challenge_for(clip: Any, seed: int) -> Any:
    import numpy as np

    from identity.liveness.challenge import make_challenge
    from identity.liveness.config import LivenessSettings

    actions = {a.value for a in clip.actions()}
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        c = make_challenge(rng, LivenessSettings())
        if all(s.kind.value in actions for s in c.steps if s.kind.value != "read_digits"):
            return c
    raise RuntimeError("no shipped challenge fits the clip")


def _enrol(client: Any, officer: dict[str, str], name: str, clip: Any) -> str:
    from media_server.simulator.performer import Action

    person = client.post(
        "/api/v1/persons", json={"external_ref": name, "display_name": name}, headers=officer
    )
    person_id = str(person.json()["id"])
    look = next(s for s in clip.segments if s.action is Action.LOOK)
    n = len(clip.frames)
    picks = [int(look.start_s * clip.fps), n // 2, n - 5]
    files = [("images", (f"f{j}.png", _png(clip.frames[k]), "image/png")) for j, k in enumerate(picks)]
    r = client.post(f"/api/v1/persons/{person_id}/enrolments/face", files=files, headers=officer)
    if r.status_code != 201 or not r.json().get("enrolled"):
        raise RuntimeError(f"enrolment of {name} failed: {r.text}")
    return person_id


def _links(
    client: Any,
    officer: dict[str, str],
    services: Any,
    people: dict[str, str],
    clips: dict[str, Any],
    n: int,
    level: int,
) -> list[tuple[str, str, str]]:
    from media_server.db.models import CheckSession

    out = []
    for i in range(n):
        name = CLIPS[i % len(CLIPS)]
        r = client.post(
            f"/api/v1/persons/{people[name]}/checkins", json={"window_minutes": 30}, headers=officer
        )
        body = r.json()
        with services.sessions.begin() as db:
            row = db.get(CheckSession, body["session_id"])
            row.challenge = _challenge_for(clips[name], 100 * level + i).to_dict()
        out.append((body["session_id"], body["url"].rsplit("/", 1)[-1], name))
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run_level(
    server_url: str, services: Any, meter: Meter, links: list[tuple[str, str, str]], level: int
) -> dict[str, Any]:
    from media_server.db.models import CheckSession, Verdict

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    retry_after = float(services.settings.media.busy_retry_after_s)
    procs = [
        ctx.Process(
            target=_phone, args=(server_url + "/whip", token, name, 7 * level + i, retry_after, results)
        )
        for i, (_, token, name) in enumerate(links)
    ]
    cpu0, threads0, wall0 = meter.cpu_s(), meter.by_thread(), time.monotonic()
    for p in procs:
        p.start()
        if p.pid is not None:
            meter.phones.add(p.pid)
    phones = [results.get(timeout=RETRY_FOR_S + 300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    # The gallery update runs after the reply: wait until every verdict is written and the pool is idle.
    deadline = time.monotonic() + 120
    ids = [sid for sid, _, _ in links]
    while time.monotonic() < deadline:
        with services.sessions() as db:
            if sum(1 for sid in ids if db.query(Verdict).filter(Verdict.session_id == sid).first()) == len(
                ids
            ):
                break
        time.sleep(0.5)
    while services.background and time.monotonic() < deadline:
        time.sleep(0.2)
    cpu1, threads1, wall1 = meter.cpu_s(), meter.by_thread(), time.monotonic()
    by_token = {token: sid for sid, token, _ in links}
    stats: list[dict[str, Any]] = []
    with services.sessions() as db:
        for r in phones:
            if "error" in r:
                continue
            row = db.get(CheckSession, by_token[r["token"]])
            s = dict((row.meta or {}).get("stats", {})) if row else {}
            s["duration_s"] = (
                (row.ended_at - row.started_at).total_seconds()
                if row and row.ended_at and row.started_at
                else float("nan")
            )
            stats.append({**s, **r})
    n_ok = max(len(stats), 1)
    sent = sum(
        max(s["sent"] - 1, 0) for s in stats
    )  # the last frame sent is never completed by the jitter buffer
    decoded = sum(s.get("video_frames_received", 0) for s in stats)
    missing = sum(
        max(s.get("video_frames_received", 0) - s.get("video_frames_recorded", 0), 0)
        + s.get("recorder_dropped", 0)
        for s in stats
    )
    latencies = [s["latency_s"] for s in stats if s.get("latency_s") is not None]
    return {
        "n": len(links),
        "errors": [r["error"] for r in phones if "error" in r],
        "loss": 1 - min(decoded, sent) / max(sent, 1),
        "missing": missing,
        "gaps": sum(s.get("recording_gaps", 0) for s in stats),
        "packets_lost": sum(s.get("recording_packets_missing", 0) for s in stats),
        "sampled": sum(s.get("frames_sampled", 0) for s in stats) / n_ok,
        "analysed": sum(s.get("frames_analysed", 0) for s in stats) / n_ok,
        "not_analysed": sum(
            s.get("frames_analysis_dropped", 0) + s.get("frames_analysis_failed", 0) for s in stats
        ),
        "cpu_per_session": (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]) / n_ok,
        "cpu_server": (cpu1[0] - cpu0[0]) / n_ok,
        "cpu_workers": (cpu1[1] - cpu0[1]) / n_ok,
        "duration": statistics.mean(s["duration_s"] for s in stats) if stats else float("nan"),
        "p50": _pct(latencies, 0.5),
        "p95": _pct(latencies, 0.95),
        "refused": sum(s.get("refused", 0) for s in stats),
        "decisions": sorted(str(s.get("decision")) for s in stats),
        "why_not_pass": sorted(
            f"{s.get('decision')}: {'; '.join(s.get('reasons') or ['-'])}"
            for s in stats
            if s.get("decision") != "pass"
        ),
        "wall": wall1 - wall0,
        "threads": sorted(
            (
                (name, (cpu - threads0.get(name, 0.0)) / n_ok)
                for name, cpu in threads1.items()
                if name != "_watch"
            ),
            key=lambda kv: -kv[1],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-admission", action="store_true", help="Lift media.max_live_sessions.")
    parser.add_argument(
        "--malloc-mmap-threshold-kb",
        type=int,
        default=None,
        help="Override media.malloc_mmap_threshold_kb (0: glibc's adaptive threshold, as before it was set).",
    )
    parser.add_argument(
        "--memory-report",
        action="store_true",
        help="Trace allocations (tracemalloc, slows the server) and print what the run left behind.",
    )
    args = parser.parse_args()

    import gc

    import httpx

    from media_server.app import create_app
    from media_server.db.enums import Role
    from media_server.settings import Settings
    from media_server.simulator.client import _cached_clip
    from media_server.webrtc.live import return_freed_memory
    from tests.e2e.e2e_service import login, seed_staff
    from tests.support.webrtc import ServerThread

    media: dict[str, Any] = {"loopback_only": True}
    if args.no_admission:
        media["max_live_sessions"] = 1000
    if args.malloc_mmap_threshold_kb is not None:
        media["malloc_mmap_threshold_kb"] = args.malloc_mmap_threshold_kb
    with tempfile.TemporaryDirectory(prefix="kuzet-bench-") as tmp, Meter() as meter:
        settings = Settings(data_dir=Path(tmp), media=media)
        print(
            f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (shared machine); "
            f"max_live_sessions={settings.media.max_live_sessions}; "
            f"malloc_mmap_threshold_kb={settings.media.malloc_mmap_threshold_kb}; clips {', '.join(CLIPS)} at "
            f"{CAMERA[0]}x{CAMERA[1]}@{CAMERA[2]:g}; shipped challenge and analysis settings"
        )
        clips = {name: _cached_clip(str(VIDEO_DIR), name) for name in CLIPS}
        app = create_app(settings)
        with ServerThread(app) as server:
            services = app.state.services
            seed_staff(services)
            with httpx.Client(base_url=server.url, timeout=300) as client:
                officer = login(client, Role.OFFICER)
                people = {name: _enrol(client, officer, name, clip) for name, clip in clips.items()}
                # Only the clips' labels stay in this process (the phones decode their own copy).
                clips = {name: _ClipLabels(clip) for name, clip in clips.items()}
                _cached_clip.cache_clear()
                time.sleep(2.0)
                gc.collect()
                return_freed_memory()
                idle_server, idle_workers = meter.rss()
                report = MemoryReport() if args.memory_report else None
                print(
                    f"RSS idle (pool warm, people enrolled): server {idle_server:.0f} MB, workers {idle_workers:.0f} MB"
                )
                print(
                    f"{'sessions':>8} {'undecoded%':>10} {'pkts.lost':>9} {'gaps':>4} {'rec.missing':>11} {'sampled':>7} {'analysed':>8} "
                    f"{'not.anal':>8} {'CPU-s/sess (media+workers)':>26} {'sess s':>6} {'p50 s':>6} {'p95 s':>6} {'refused':>7}  decisions"
                )
                for level, n in enumerate(args.levels):
                    links = _links(client, officer, services, people, clips, n, level)
                    r = run_level(server.url, services, meter, links, level)
                    cpu = f"{r['cpu_per_session']:.2f} ({r['cpu_server']:.2f}+{r['cpu_workers']:.2f})"
                    print(
                        f"{r['n']:>8} {100 * r['loss']:>10.2f} {r['packets_lost']:>9} {r['gaps']:>4} {r['missing']:>11} {r['sampled']:>7.0f} "
                        f"{r['analysed']:>8.0f} {r['not_analysed']:>8} {cpu:>26} "
                        f"{r['duration']:>6.1f} {r['p50']:>6.2f} {r['p95']:>6.2f} {r['refused']:>7}  "
                        f"{','.join(r['decisions'])}" + (f"  errors: {r['errors']}" if r["errors"] else ""),
                        flush=True,
                    )
                    top = ", ".join(f"{name} {cpu:.2f}" for name, cpu in r["threads"][:6] if cpu >= 0.01)
                    print(f"{'':>8} media CPU-s/session by thread: {top}", flush=True)
                    for why in r["why_not_pass"]:
                        print(f"{'':>8} {why}", flush=True)
            time.sleep(5.0)
            gc.collect()
            return_freed_memory()
            after_server, after_workers = meter.rss()
            if report is not None:
                report.print(app)
        print(
            f"RSS server: idle {idle_server:.0f} MB, peak {meter.peak_server_mb:.0f} MB, after {after_server:.0f} MB "
            f"({100 * (after_server / idle_server - 1):+.0f}% of idle); workers: idle {idle_workers:.0f} MB, "
            f"peak {meter.peak_workers_mb:.0f} MB, after {after_workers:.0f} MB"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
