"""How many concurrent 640x480 WHIP sessions one server process sustains with analysis running.

The server (uvicorn + aiortc, frame sampling with live face/brightness hints, recording, audio
intake) runs in this process and is measured alone; each client is an aiortc peer in its own
process sending a moving 640x480@30 picture (VP8) and a 48 kHz tone (Opus). Levels ramp 1, 2, 4, ...
until frame loss exceeds --max-loss or --max-sessions is reached.

    .venv/bin/python benchmarks/media_sessions.py [--seconds 15] [--max-sessions 8]

Printed per level: frames the clients sent vs frames the server decoded (loss), frames sampled for
analysis, frames the recorder had to drop, server CPU (process CPU time / wall time over the window
in which every client was streaming, 100% = one core) and CPU per session.
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


# --- client side (child processes) ------------------------------------------------------------


def _client_main(url: str, token: str, seconds: float, results: Any) -> None:
    try:
        results.put({**asyncio.run(_client(url, token, seconds, results.put)), "event": "done"})
    except Exception as exc:
        results.put({"token": token, "event": "done", "error": f"{type(exc).__name__}: {exc}"})


async def _client(url: str, token: str, seconds: float, report: Any) -> dict[str, Any]:
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
    pictures = [
        VideoFrame.from_ndarray(np.roll(canvas, int(8 * np.sin(i / 5)), axis=1), format="rgb24").reformat(
            format="yuv420p"
        )
        for i in range(FPS)
    ]

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


def run_level(url: str, tokens: Any, sink: StatsSink, n: int, seconds: float, level: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    people = {f"bench-{level}-{i}": tokens.issue(f"bench-{level}-{i}", kind="station") for i in range(n)}
    by_token = {token: person for person, token in people.items()}
    procs = [ctx.Process(target=_client_main, args=(url, t, seconds, results)) for t in people.values()]
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
    sent = received = sampled = dropped = 0
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
    args = parser.parse_args()

    from media_server.settings import Settings
    from media_server.webrtc.credentials import OneTimeTokens
    from tests.support.webrtc import ServerThread, build_whip_app

    with tempfile.TemporaryDirectory(prefix="kuzet-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            media={"loopback_only": True, "max_session_s": 600},
            # Long prompt windows keep every session in its capture phase for the whole measurement.
            liveness={"motion_steps": 4, "motion_window_s": 15, "read_digits_window_s": 30},
        )
        tokens, sink = OneTimeTokens(), StatsSink()
        print(f"host: {os.cpu_count()} CPUs; server process pid {os.getpid()}; {args.seconds:g} s per level")
        print(
            f"media: {WIDTH}x{HEIGHT}@{FPS} VP8 + Opus; sampling every {settings.media.sample_every_s} s "
            f"with live hints; recording libx264 {settings.media.record_preset} + AAC"
        )
        header = (
            f"{'sessions':>8} {'sent':>7} {'decoded':>7} {'loss%':>6} {'worst%':>6} {'fps/sess':>8} "
            f"{'sampled':>7} {'rec.drop':>8} {'server CPU':>10} {'CPU/session':>11}"
        )
        print(header)
        sustained = 0
        with ServerThread(build_whip_app(settings, tokens, sink)) as server:
            n, level = 1, 0
            while n <= args.max_sessions:
                r = run_level(server.url, tokens, sink, n, args.seconds, level)
                print(
                    f"{n:>8} {r['sent']:>7} {r['received']:>7} {100 * r['loss']:>6.2f} "
                    f"{100 * r['worst_loss']:>6.2f} {r['fps']:>8.1f} {r['sampled']:>7} "
                    f"{r['recorder_dropped']:>8} {100 * r['cpu_core']:>9.0f}% "
                    f"{100 * r['cpu_per_session']:>10.1f}%"
                    + (f"  errors: {r['errors']}" if r["errors"] else ""),
                    flush=True,
                )
                if r["errors"] or r["loss"] > args.max_loss:
                    break
                sustained = n
                n, level = n * 2, level + 1
        print(
            f"sustained without frame loss (<= {100 * args.max_loss:g}%): {sustained} concurrent session(s)"
        )


if __name__ == "__main__":
    main()
