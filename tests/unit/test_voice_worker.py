"""Voice engines in a spawn worker process: init, enrol, verify, all as plain picklable values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from identity.checks import CheckKind, CheckResult, Outcome
from identity.voice import worker
from identity.voice.audio import DecodedAudio, decode_path
from identity.voice.config import SpeakerEngineKind, VoiceSettings
from identity.voice.template import template_from_bytes

REPO = Path(__file__).parents[2]
VOICE = REPO / ".." / "shared" / "data" / "voice"
SETTINGS = VoiceSettings()


def sc(speaker: str, i: int) -> np.ndarray:
    decoded = decode_path(str(VOICE / "speechcommands" / f"{speaker}_{i}.flac"), SETTINGS)
    assert isinstance(decoded, DecodedAudio)
    return decoded.pcm16k


def test_spawn_worker_round_trip() -> None:
    with worker.make_executor(REPO / "var" / "models", SETTINGS, processes=1) as pool:
        info = pool.submit(worker.engine_info_job).result(timeout=300)
        assert info["engine"]["name"] == "resemblyzer_ge2e" and info["vad"] == "silero_vad"
        template, results = pool.submit(worker.enrol_job, [sc("105a0eea", 0), sc("105a0eea", 1)]).result(
            timeout=300
        )
        assert template is not None, results
        assert CheckResult.from_dict(results[-1]).code == "enrolled"
        assert template_from_bytes(template).n == 2
        quality, voice = (
            CheckResult.from_dict(r)
            for r in pool.submit(worker.verify_job, template, sc("105a0eea", 2)).result()
        )
        assert quality.kind is CheckKind.VOICE_QUALITY and quality.passed
        assert voice.kind is CheckKind.VOICE and voice.outcome is Outcome.PASS, voice
        bad = CheckResult.from_dict(pool.submit(worker.verify_job, b"garbage", sc("105a0eea", 2)).result()[0])
        assert bad.outcome is Outcome.TECHNICAL and bad.code == "bad_template"


def test_worker_with_unloadable_engine_answers_technical(tmp_path: Path) -> None:
    # in-process: the initializer's error path, without paying for another spawn
    worker.init_worker(
        str(tmp_path), SETTINGS.model_copy(update={"engine": SpeakerEngineKind.ECAPA}).model_dump()
    )
    try:
        assert "ECAPA weights not provisioned" in worker.engine_info_job()["error"]
        result = CheckResult.from_dict(worker.verify_job(b"", np.zeros(16000, dtype=np.float32))[0])
        assert result.outcome is Outcome.TECHNICAL and result.code == "engine_unavailable"
        assert "ECAPA weights not provisioned" in result.details["error"]
    finally:
        worker.init_worker(str(tmp_path), {"engine": "ecapa"})  # leave no loaded pipeline behind
