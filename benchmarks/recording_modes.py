"""How many concurrent 640x480 WHIP sessions one server process sustains with analysis running.

The server (uvicorn + aiortc, frame sampling with live face/brightness hints, recording, audio
intake) runs in this process and is measured alone; each client is an aiortc peer in its own
process sending a moving 640x480@30 picture (VP8) and a 48 kHz tone (Opus). Levels ramp 1, 2, 4, ...
until frame loss exceeds --max-loss or --max-sessions is reached.

    .venv/bin/python benchmarks/media_sessions.py [--seconds 15] [--max-sessions 8]
    .venv/bin/python benchmarks/media_sessions.py --recording both --levels 1,2,4 \
        --clip ../shared/data/video/lp_d3.mp4 --seconds 10

Printed per level: frames the clients sent vs frames the server decoded (loss), frames sampled for
analysis, frames missing from the stored recording (sent by the client and not in the file: lost on
the network, dropped by an overloaded recorder, discarded by the jitter buffer) and the recording gap
events, the recorder thread's CPU seconds per session, server CPU (process CPU time / wall time over
the window in which every client was streaming, 100% = one core) and CPU per session.
`--recording both` runs every level once with the re-encoding recorder (the old path: decode, libx264
+ AAC) and once remuxing (the received VP8/Opus into WebM). `--clip` sends a real video (decoded once,
fitted into 640x480 and looped) instead of the synthetic picture.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTH, HEIGHT, FPS = 640, 480, 30
AUDIO_RATE, AUDIO_SAMPLES = 48000, 960
DRAIN_S = 2.0  # after the clients stop sending, frames still in flight may arrive
CLIP_FRAMES = 150  # a real clip is looped over its first 5 s (decoded once per client)


# --- client side (child processes) ------------------------------------------------------------


def _client_main(url: str, token: str, seconds: float, results: Any, clip: str | None) -> None:
    try:
        results.put({**asyncio.run(_client(url, token, seconds, results.put, clip)), "event": "done"})
    except Exception as exc:
        results.put({"token": token, "event": "done", "error": f"{type(exc).__name__}: {exc}"})


def _clip_pictures(path: str, limit: int) -> list[Any]:
    """Up to `limit` frames of a real video, each fitted into a grey 640x480 canvas (yuv420p)."""
    import av
    import numpy as np
    from PIL import Image

    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            img = frame.to_image()
            scale = min(WIDTH / img.width, HEIGHT / img.height)
            img = img.resize((int(img.width * scale) // 2 * 2, int(img.height * scale) // 2 * 2))
            canvas = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
            canvas.paste(img, ((WIDTH - img.width) // 2, (HEIGHT - img.height) // 2))
            rgb = np.asarray(canvas)
            out.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))
            if len(out) >= limit:
                break
    return out


async def _client(
    url: str, token: str, seconds: float, report: Any, clip: str | None = None
) -> dict[str, Any]:
    import numpy as np
    from aiortc import AudioStreamTrack, VideoStreamTrack
    from av import AudioFrame, VideoFrame
    from PIL import Image
    from skimage import data

    from media_server.station_client import WhipClient

    face = np.asarray(Image.fromarray(data.astronaut()).resize((HEIGHT, HEIGHT)))
    canvas = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    canvas[:, (WIDTH - HEIGHT) // 2 : (WIDTH + HEIGHT) // 2] = face
    # A slowly swaying picture: the encoder has real motion to code, like a hand-held phone.
    pictures = (
        _clip_pictures(clip, CLIP_FRAMES)
        if clip
        else [
            VideoFrame.from_ndarray(np.roll(canvas, int(8 * np.sin(i / 5)), axis=1), format="rgb24").reformat(
                format="yuv420p"
            )
            for i in range(FPS)
        ]
    )

    class Video(VideoStreamTrack):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.sending = True
            self.first_sent = asyncio.Event()

        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = pictures[self.sent % len(pictures)]
            frame.pts, frame.time_base = pts, time_base
            if not self.sending:
                await asyncio.sleep(3600)  # stop sending; the peer is closed before this returns
            self.sent += 1
            self.first_sent.set()
            return frame

    tone = (0.2 * 32767 * np.sin(2 * np.pi * 220 * np.arange(AUDIO_SAMPLES * 50) / AUDIO_RATE)).astype(
        np.int16
    )

    class Tone(AudioStreamTrack):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._n = 0

        async def recv(self) -> AudioFrame:
            frame = await super().recv()  # paced silence, 20 ms
            chunk = tone[(self._n % 50) * AUDIO_SAMPLES : (self._n % 50 + 1) * AUDIO_SAMPLES]
            self._n += 1
            out = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            out.sample_rate, out.pts, out.time_base = AUDIO_RATE, frame.pts, fractions.Fraction(1, AUDIO_RATE)
            return out

    video, audio = Video(), Tone()
    client = WhipClient(url, token, loopback_only=True)
    try:
        await client.publish([video, audio])
        await asyncio.wait_for(client.channel_open.wait(), 30)
        await video.first_sent.wait()
        report({"token": token, "event": "started"})
        started = time.monotonic()
        await asyncio.sleep(seconds)
        video.sending = False
        sent, elapsed = video.sent, time.monotonic() - started
        report({"token": token, "event": "stopped"})
        await asyncio.sleep(DRAIN_S)
        await client.delete()
    finally:
        await client.close()
    return {"token": token, "sent": sent, "send_s": elapsed}


# --- server side (this process) ---------------------------------------------------------------


class StatsSink:
    """Keeps only each capture's counters (frames are dropped at once)."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()

    async def finish(self, capture: Any) -> None:
        with self._cond:
            self.stats[capture.person_id] = {**capture.stats, "reason": capture.ended_reason.value}
            self._cond.notify_all()

    def wait_for(self, people: set[str], timeout_s: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: people <= set(self.stats), timeout_s)


def run_level(
    url: str, tokens: Any, sink: StatsSink, n: int, seconds: float, level: int, clip: str | None = None
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    people = {f"bench-{level}-{i}": tokens.issue(f"bench-{level}-{i}", kind="station") for i in range(n)}
    by_token = {token: person for person, token in people.items()}
    procs = [ctx.Process(target=_client_main, args=(url, t, seconds, results, clip)) for t in people.values()]
    for p in procs:
        p.start()
    # CPU is measured over the steady window: from the last client streaming to the first stopping.
    cpu0 = wall0 = cpu1 = wall1 = None
    started = stopped = 0
    client_results: list[dict[str, Any]] = []
    while len(client_results) < n:
        message = results.get(timeout=seconds + 180)
        if message["event"] == "started":
            started += 1
            if started == n:
                cpu0, wall0 = time.process_time(), time.monotonic()
        elif message["event"] == "stopped":
            stopped += 1
            if stopped == 1 and cpu0 is not None:
                cpu1, wall1 = time.process_time(), time.monotonic()
        else:
            client_results.append(message)
            if cpu0 is not None and cpu1 is None:
                cpu1, wall1 = time.process_time(), time.monotonic()
    sink.wait_for(set(people), timeout_s=60)
    for p in procs:
        p.join(timeout=30)
    window = (wall1 - wall0) if wall0 is not None and wall1 is not None else float("nan")
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else float("nan")
    errors = [r["error"] for r in client_results if "error" in r]
    sent = received = sampled = dropped = rec_missing = gaps = 0
    rec_cpu_ms = 0
    worst = 0.0
    for r in client_results:
        if "error" in r:
            continue
        s = sink.stats.get(by_token[r["token"]], {})
        got = s.get("video_frames_received", 0)
        # aiortc's jitter buffer completes a frame when the next frame's first packet arrives, so
        # the last frame a client sends is never decoded: it is not counted as lost.
        decodable = max(r["sent"] - 1, 0)
        sent += decodable
        received += min(got, decodable)
        sampled += s.get("frames_sampled", 0)
        dropped += s.get("recorder_dropped", 0)
        # Frames the client sent that are not in the stored file (whatever the reason).
        rec_missing += max(0, decodable - s.get("video_frames_recorded", 0))
        gaps += s.get("recording_gaps", 0)
        rec_cpu_ms += s.get("recording_cpu_ms", 0)
        worst = max(worst, 1 - min(got, decodable) / max(decodable, 1))
    return {
        "n": n,
        "errors": errors,
        "sent": sent,
        "received": received,
        "loss": 1 - received / max(sent, 1),
        "worst_loss": worst,
        "fps": received / max(n, 1) / seconds,
        "reasons": sorted({sink.stats.get(p, {}).get("reason", "?") for p in people}),
        "sampled": sampled,
        "recorder_dropped": dropped,
        "recording_missing": rec_missing,
        "recording_gaps": gaps,
        "recording_cpu_s_per_session": rec_cpu_ms / 1000 / max(n - len(errors), 1),
        "cpu_core": cpu / window,
        "cpu_per_session": cpu / window / n,
        "window_s": window,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="Sending time per client per level.")
    parser.add_argument("--max-sessions", type=int, default=8)
    parser.add_argument("--max-loss", type=float, default=0.01, help="Stop when frame loss exceeds this.")
    parser.add_argument(
        "--levels", help="Comma-separated session counts to run (e.g. 1,2,4) instead of ramping until loss."
    )
    parser.add_argument(
        "--recording",
        choices=("remux", "reencode", "both"),
        default="remux",
        help="The server's media.record_mode; both: every level with each, re-encoding first.",
    )
    parser.add_argument("--clip", help="A real video file to send (looped) instead of the synthetic picture.")
    args = parser.parse_args()
    modes = ["reencode", "remux"] if args.recording == "both" else [args.recording]
    levels = [int(x) for x in args.levels.split(",")] if args.levels else None
    print(f"host: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} (1 min) before the run")
    summary = [_run_mode(mode, args, levels) for mode in modes]
    if len(summary) > 1:
        print("\nrecording: re-encode vs remux, per level")
        print(
            f"{'sessions':>8} {'mode':>8} {'rec.CPU s/sess':>14} {'rec.missing':>11} {'gaps':>5} {'srv CPU/sess':>12}"
        )
        for rows in zip(*summary, strict=False):
            for mode, r in zip(modes, rows, strict=True):
                print(
                    f"{r['n']:>8} {mode:>8} {r['recording_cpu_s_per_session']:>14.2f} "
                    f"{r['recording_missing']:>11} {r['recording_gaps']:>5} {100 * r['cpu_per_session']:>11.1f}%"
                )
    print(f"load average after the run: {os.getloadavg()[0]:.2f} (1 min)")


def _run_mode(mode: str, args: Any, levels: list[int] | None) -> list[dict[str, Any]]:
    from media_server.settings import Settings
    from media_server.webrtc.credentials import OneTimeTokens
    from tests.support.webrtc import ServerThread, build_whip_app

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kuzet-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            media={"loopback_only": True, "max_session_s": 600, "record_mode": mode},
            # Long prompt windows keep every session in its capture phase for the whole measurement.
            liveness={"motion_steps": 4, "motion_window_s": 15, "read_digits_window_s": 30},
        )
        tokens, sink = OneTimeTokens(), StatsSink()
        recording = (
            f"re-encoding libx264 {settings.media.record_preset} (1 thread) + AAC"
            if mode == "reencode"
            else "remuxing the received VP8 + Opus into WebM"
        )
        print(
            f"\n[{mode}] server pid {os.getpid()}; {args.seconds:g} s per level; media: {WIDTH}x{HEIGHT}@{FPS} "
            f"VP8 + Opus from {args.clip or 'a synthetic swaying picture'}; sampling every "
            f"{settings.media.sample_every_s} s with live hints; recording {recording}"
        )
        header = (
            f"{'sessions':>8} {'sent':>7} {'decoded':>7} {'loss%':>6} {'worst%':>6} {'fps/sess':>8} "
            f"{'sampled':>7} {'rec.drop':>8} {'rec.miss':>8} {'gaps':>5} {'rec.CPU s':>9} "
            f"{'server CPU':>10} {'CPU/session':>11}"
        )
        print(header)
        sustained = 0
        with ServerThread(build_whip_app(settings, tokens, sink)) as server:
            plan = levels or [
                2**i for i in range(args.max_sessions.bit_length()) if 2**i <= args.max_sessions
            ]
            for level, n in enumerate(plan):
                r = run_level(server.url, tokens, sink, n, args.seconds, level, args.clip)
                rows.append(r)
                print(
                    f"{n:>8} {r['sent']:>7} {r['received']:>7} {100 * r['loss']:>6.2f} "
                    f"{100 * r['worst_loss']:>6.2f} {r['fps']:>8.1f} {r['sampled']:>7} "
                    f"{r['recorder_dropped']:>8} {r['recording_missing']:>8} {r['recording_gaps']:>5} "
                    f"{r['recording_cpu_s_per_session']:>9.2f} {100 * r['cpu_core']:>9.0f}% "
                    f"{100 * r['cpu_per_session']:>10.1f}%"
                    + (f"  errors: {r['errors']}" if r["errors"] else ""),
                    flush=True,
                )
                if levels is None and (r["errors"] or r["loss"] > args.max_loss):
                    break
                if not r["errors"] and r["loss"] <= args.max_loss:
                    sustained = max(sustained, n)
        print(
            f"sustained without frame loss (<= {100 * args.max_loss:g}%): {sustained} concurrent session(s)"
        )
    return rows


if __name__ == "__main__":
    main()
