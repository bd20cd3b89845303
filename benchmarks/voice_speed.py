"""Voice engine speed: model load time and time per 3 s of audio (VAD + gate, embedding), printed.

    .venv/bin/python benchmarks/voice_speed.py [--repeats 20] [--models-dir var/models]

Runs in this process on one torch thread (settings.torch_threads), as one worker process would.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / ".." / "shared" / "data" / "voice" / "speechcommands" / "03401e93_0.flac"  # 3.0 s, 16 kHz


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    args = parser.parse_args()

    from identity.voice.audio import DecodedAudio, decode_path
    from identity.voice.config import VoiceSettings

    settings = VoiceSettings()
    t0 = time.perf_counter()
    decoded = decode_path(str(CLIP), settings)
    decode_ms = (time.perf_counter() - t0) * 1000
    assert isinstance(decoded, DecodedAudio), decoded
    pcm = decoded.pcm16k
    scale = 3.0 / decoded.duration_s

    from identity.voice.engines import load_engine
    from identity.voice.vad import load_speech_detector

    t0 = time.perf_counter()
    import torch  # noqa: F401  (import cost reported apart from weights loading)

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    detector = load_speech_detector(args.models_dir, settings)
    vad_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = load_engine(args.models_dir, settings)
    engine_load_s = time.perf_counter() - t0

    from identity.voice.pipeline import VoicePipeline, load_calibration, load_cohort

    pipeline = VoicePipeline(detector, engine, settings, load_cohort(engine), load_calibration())
    prepared = pipeline.prepare(pcm)
    pipeline.embed(prepared)  # warm-up (first-call library initialisation)

    def timed(fn: object) -> list[float]:
        out = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            out.append((time.perf_counter() - t) * 1000 * scale)
        return out

    vad_ms = timed(lambda: pipeline.prepare(pcm))
    emb_ms = timed(lambda: pipeline.embed(prepared))
    total_ms = timed(lambda: pipeline.embed(pipeline.prepare(pcm)))
    print(
        f"engine {engine.stamp.name} {engine.stamp.version}, vad {detector.name}, "
        f"torch threads {settings.torch_threads}"
    )
    print(
        f"import torch: {import_s:.2f} s; load VAD: {vad_load_s:.2f} s; "
        f"load speaker engine: {engine_load_s:.2f} s"
    )
    print(f"decode 3 s flac: {decode_ms:.1f} ms (first call)")
    for name, ms in (
        ("VAD + quality gate", vad_ms),
        ("embedding", emb_ms),
        ("VAD + gate + embedding", total_ms),
    ):
        print(
            f"{name:24} per 3 s of audio: median {statistics.median(ms):6.1f} ms, min {min(ms):6.1f} ms "
            f"({args.repeats} runs)"
        )


if __name__ == "__main__":
    main()
