"""Voice pipeline on real speech: VAD, quality outcomes, enrolment + verification, templates, ECAPA errors."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from identity.checks import CheckKind, ModelStamp, Outcome
from identity.models import ModelError, load_manifest
from identity.voice.audio import DecodedAudio, Pcm16k, decode_path
from identity.voice.config import SpeakerEngineKind, VadBackend, VoiceSettings
from identity.voice.engine_ecapa import EcapaEngine
from identity.voice.engines import load_engine
from identity.voice.pipeline import VoicePipeline
from identity.voice.template import TemplateError, VoiceTemplate, template_from_bytes, template_to_bytes
from identity.voice.vad import WebrtcVad, load_speech_detector

REPO = Path(__file__).parents[2]
VOICE = REPO / ".." / "shared" / "data" / "voice"
MODELS_DIR = REPO / "var" / "models"
SETTINGS = VoiceSettings()


def load(rel: str) -> Pcm16k:
    decoded = decode_path(str(VOICE / rel), SETTINGS)
    assert isinstance(decoded, DecodedAudio), decoded
    return decoded.pcm16k


def sc(speaker: str, i: int) -> Pcm16k:
    return load(f"speechcommands/{speaker}_{i}.flac")


def white_noise(seconds: float, rms: float, seed: int = 0) -> Pcm16k:
    rng = np.random.default_rng(seed)
    return Pcm16k((rng.standard_normal(int(16000 * seconds)) * rms).astype(np.float32))


@pytest.fixture(scope="module")
def pipeline() -> VoicePipeline:
    return VoicePipeline.load(MODELS_DIR, SETTINGS)


def net_speech_s(segments: list[tuple[int, int]]) -> float:
    return sum(e - s for s, e in segments) / 16000


# --- speech detection -------------------------------------------------------------------------------


def test_silero_is_loaded_from_the_verified_manifest_path(pipeline: VoicePipeline) -> None:
    assert pipeline.detector.name == "silero_vad"
    stamp = pipeline.detector.stamp
    assert stamp is not None and stamp.weights_sha256 == load_manifest()["silero_vad"].sha256


def test_silero_finds_speech_not_silence_nor_noise(pipeline: VoicePipeline) -> None:
    speech = pipeline.detector.segments(sc("03401e93", 0))
    assert len(speech) >= 2 and net_speech_s(speech) > 0.6  # three words
    assert pipeline.detector.segments(Pcm16k(np.zeros(48000, dtype=np.float32))) == []
    assert net_speech_s(pipeline.detector.segments(white_noise(3, 0.1))) < 0.3


def test_webrtc_fallback_finds_speech_not_silence() -> None:
    vad = WebrtcVad(SETTINGS)
    assert net_speech_s(vad.segments(sc("03401e93", 0))) > 0.6
    assert vad.segments(Pcm16k(np.zeros(48000, dtype=np.float32))) == []


def test_vad_falls_back_to_webrtc_when_configured() -> None:
    detector = load_speech_detector(
        MODELS_DIR, SETTINGS.model_copy(update={"vad_backend": VadBackend.WEBRTC})
    )
    assert detector.name == "webrtcvad" and detector.stamp is None


# --- quality outcomes -------------------------------------------------------------------------------


def test_clean_speech_passes_quality(pipeline: VoicePipeline) -> None:
    q = pipeline.prepare(sc("03401e93", 0)).quality
    assert q.kind is CheckKind.VOICE_QUALITY and q.outcome is Outcome.PASS, q
    assert q.details["snr_db"] > SETTINGS.min_snr_db


def test_8khz_fsdd_passes_quality_after_resampling(pipeline: VoicePipeline) -> None:
    q = pipeline.prepare(load("fsdd/george_00_97410.flac")).quality
    assert q.outcome is Outcome.PASS, q


def test_silence_is_technical_no_signal(pipeline: VoicePipeline) -> None:
    q = pipeline.prepare(Pcm16k(np.zeros(48000, dtype=np.float32))).quality
    assert q.outcome is Outcome.TECHNICAL and q.code == "no_signal"


def test_white_noise_is_inconclusive(pipeline: VoicePipeline) -> None:
    q = pipeline.prepare(white_noise(3, 0.1)).quality
    assert q.outcome is Outcome.INCONCLUSIVE and q.code in {"no_speech", "too_little_speech", "too_noisy"}


def test_speech_buried_in_noise_is_inconclusive(pipeline: VoicePipeline) -> None:
    clean = sc("03401e93", 0)
    noisy = Pcm16k(np.clip(clean + white_noise(3, 0.1, seed=1), -1, 1).astype(np.float32))
    q = pipeline.prepare(noisy).quality
    assert q.outcome is Outcome.INCONCLUSIVE, q
    assert q.code in {"too_noisy", "no_speech", "too_little_speech"}


def test_one_second_of_speech_is_inconclusive(pipeline: VoicePipeline) -> None:
    clip = sc("03401e93", 0)
    seg = pipeline.detector.segments(clip)[0]
    mid = (seg[0] + seg[1]) // 2
    one_s = Pcm16k(clip[max(0, mid - 8000) : max(0, mid - 8000) + 16000])
    q = pipeline.prepare(one_s).quality
    assert q.outcome is Outcome.INCONCLUSIVE and q.code == "too_little_speech", q
    assert q.score is not None and q.threshold == SETTINGS.min_net_speech_s and q.score < q.threshold


def test_clipped_speech_is_inconclusive(pipeline: VoicePipeline) -> None:
    loud = Pcm16k(np.clip(sc("03401e93", 0) * 50, -1, 1).astype(np.float32))
    q = pipeline.prepare(loud).quality
    assert q.outcome is Outcome.INCONCLUSIVE and q.code == "clipped"


def test_quality_never_fails(pipeline: VoicePipeline) -> None:
    for x in (Pcm16k(np.zeros(16000, dtype=np.float32)), white_noise(2, 0.5), sc("0c40e715", 1)):
        assert pipeline.prepare(x).quality.outcome is not Outcome.FAIL


# --- enrolment and verification -----------------------------------------------------------------------

SPEAKERS = ("03401e93", "0ea0e2f4", "105a0eea")  # all three clips pass the quality gate


@pytest.fixture(scope="module")
def templates(pipeline: VoicePipeline) -> dict[str, VoiceTemplate]:
    out = {}
    for spk in SPEAKERS:
        template, results = pipeline.enrol([sc(spk, 0), sc(spk, 1)], metadata={"speaker": spk})
        assert template is not None, results
        assert results[-1].kind is CheckKind.VOICE and results[-1].code == "enrolled"
        out[spk] = template
    return out


def test_same_speaker_passes(pipeline: VoicePipeline, templates: dict[str, VoiceTemplate]) -> None:
    for spk in SPEAKERS:
        quality, voice = pipeline.verify(templates[spk], sc(spk, 2))
        assert quality.passed
        assert voice.kind is CheckKind.VOICE and voice.outcome is Outcome.PASS, (spk, voice)
        assert voice.model == pipeline.engine.stamp and voice.threshold is not None
        assert voice.details["target_fmr"] == SETTINGS.target_fmr and voice.details["n_enrol"] == 2


def test_different_speaker_fails(pipeline: VoicePipeline, templates: dict[str, VoiceTemplate]) -> None:
    for spk in SPEAKERS:
        for other in SPEAKERS:
            if other != spk:
                _, voice = pipeline.verify(templates[spk], sc(other, 2))
                assert voice.outcome is Outcome.FAIL and voice.code == "no_match", (spk, other, voice)


def test_bad_audio_is_never_a_voice_fail(
    pipeline: VoicePipeline, templates: dict[str, VoiceTemplate]
) -> None:
    quality, voice = pipeline.verify(templates[SPEAKERS[0]], white_noise(3, 0.1))
    assert quality.outcome is Outcome.INCONCLUSIVE
    assert voice.outcome is Outcome.INCONCLUSIVE and voice.code == "quality_gate"


def test_template_from_other_weights_is_technical(
    pipeline: VoicePipeline, templates: dict[str, VoiceTemplate]
) -> None:
    other = dataclasses.replace(
        templates[SPEAKERS[0]], engine=ModelStamp("resemblyzer_ge2e", "0.0", "0" * 64)
    )
    _, voice = pipeline.verify(other, sc(SPEAKERS[0], 2))
    assert voice.outcome is Outcome.TECHNICAL and voice.code == "engine_mismatch"


def test_enrolment_from_unusable_audio_is_inconclusive(pipeline: VoicePipeline) -> None:
    template, results = pipeline.enrol([Pcm16k(np.zeros(48000, dtype=np.float32)), sc(SPEAKERS[0], 0)])
    assert template is None
    assert results[-1].outcome is Outcome.INCONCLUSIVE and results[-1].code == "enrolment_incomplete"


def test_template_bytes_round_trip(templates: dict[str, VoiceTemplate]) -> None:
    template = templates[SPEAKERS[0]]
    data = template_to_bytes(template)
    back = template_from_bytes(data)
    assert back.engine == template.engine and back.metadata == {"speaker": SPEAKERS[0]}
    assert np.array_equal(back.embeddings, template.embeddings) and back.embeddings.shape == (2, 256)
    assert np.allclose(np.linalg.norm(back.centroid), 1.0)
    for bad in (b"", b"KZVT", data[:-4], b"XXXX" + data[4:]):
        with pytest.raises(TemplateError):
            template_from_bytes(bad)


# --- ECAPA (weights not provisioned, speechbrain not installed here) ----------------------------------


def test_ecapa_without_weights_gives_a_clear_error(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"engine": SpeakerEngineKind.ECAPA})
    with pytest.raises(ModelError, match="^ECAPA weights not provisioned: .*no sha256 pinned"):
        load_engine(tmp_path, settings)


def test_ecapa_with_pinned_weights_but_no_speechbrain_says_so(tmp_path: Path) -> None:
    model_dir = tmp_path / "speechbrain" / "spkrec-ecapa-voxceleb"
    model_dir.mkdir(parents=True)
    ckpt = model_dir / "embedding_model.ckpt"
    ckpt.write_bytes(b"stand-in checkpoint")
    (model_dir / "hyperparams.yaml").write_text("# stand-in\n")
    manifest = load_manifest()
    manifest["speechbrain_ecapa_voxceleb"] = dataclasses.replace(
        manifest["speechbrain_ecapa_voxceleb"], sha256=hashlib.sha256(ckpt.read_bytes()).hexdigest()
    )
    if importlib.util.find_spec("speechbrain") is not None:  # pragma: no cover - only where it is installed
        pytest.skip("speechbrain is installed here")
    with pytest.raises(ModelError, match="speechbrain not installed"):
        EcapaEngine.load(tmp_path, SETTINGS, manifest)
    # a wrong file under the pinned name is refused as not provisioned
    ckpt.write_bytes(b"tampered")
    with pytest.raises(ModelError, match="^ECAPA weights not provisioned: .*sha256 mismatch"):
        EcapaEngine.load(tmp_path, SETTINGS, manifest)


def test_calibration_table_is_shipped_and_documented() -> None:
    table = json.loads((REPO / "identity" / "voice" / "calibration.json").read_text())
    entry = next(e for e in table["entries"] if e["score_norm"] == SETTINGS.score_norm.value)
    fmrs = [row["fmr"] for row in entry["table"]]
    thresholds = [row["threshold"] for row in entry["table"]]
    assert 0.01 in fmrs and entry["n_impostor_trials"] > 1000
    assert thresholds == sorted(thresholds)  # lower FMR, higher threshold
    assert all(row["measured_fmr"] <= row["fmr"] for row in entry["table"])
