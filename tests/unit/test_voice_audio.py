"""Voice intake: conversions, decoding, and refusals as TECHNICAL results (no models needed)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from identity.checks import CheckKind, Outcome
from identity.voice.audio import (
    SAMPLE_RATE_HZ,
    DecodedAudio,
    decode_bytes,
    decode_path,
    decode_pcm,
    pcm48k_stereo_int16_to_pcm16k,
    pcm_int16_to_pcm16k,
)
from identity.voice.config import VoiceSettings

REPO = Path(__file__).parents[2]
VOICE = REPO / ".." / "shared" / "data" / "voice"
SETTINGS = VoiceSettings()


def _stereo_sine_48k(seconds: float, hz: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    left = amp * np.sin(2 * np.pi * hz * t)
    right = amp * np.sin(2 * np.pi * hz * t)
    return (np.stack([left, right], axis=1) * 32767).astype(np.int16).reshape(-1)  # interleaved


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def _wav_bytes(x: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def test_webrtc_48k_stereo_int16_becomes_16k_mono_float32() -> None:
    interleaved = _stereo_sine_48k(2.0, 440)
    pcm = pcm48k_stereo_int16_to_pcm16k(interleaved)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert len(pcm) == 2 * SAMPLE_RATE_HZ  # 96000 stereo frames / 3
    assert abs(_peak_hz(pcm, SAMPLE_RATE_HZ) - 440) < 2
    assert 0.45 < np.abs(pcm[1000:-1000]).max() < 0.55  # amplitude kept, channels averaged not summed


def test_aiortc_packed_shape_and_frames_by_channels_agree() -> None:
    interleaved = _stereo_sine_48k(0.5, 300)
    packed = interleaved.reshape(1, -1)  # aiortc AudioFrame.to_ndarray() for packed s16
    by_channel = interleaved.reshape(-1, 2)
    a = pcm_int16_to_pcm16k(packed, 48000, 2)
    b = pcm_int16_to_pcm16k(by_channel, 48000, 2)
    assert np.array_equal(a, b) and len(a) == 8000


def test_opposite_channels_average_to_silence() -> None:
    frames = np.zeros((4800, 2), dtype=np.int16)
    frames[:, 0], frames[:, 1] = 10000, -10000
    assert np.allclose(pcm_int16_to_pcm16k(frames, 48000, 2), 0, atol=1e-6)


def test_pcm_with_odd_sample_count_is_refused() -> None:
    with pytest.raises(ValueError):
        pcm_int16_to_pcm16k(np.zeros(7, dtype=np.int16), 48000, 2)
    result = decode_pcm(np.zeros(48001, dtype=np.int16), 48000, 2, SETTINGS)
    assert not isinstance(result, DecodedAudio)
    assert result.outcome is Outcome.TECHNICAL and result.code == "bad_pcm"


def test_decode_pcm_48k_stereo() -> None:
    result = decode_pcm(_stereo_sine_48k(1.5, 200), 48000, 2, SETTINGS)
    assert isinstance(result, DecodedAudio)
    assert result.source_rate_hz == 48000 and result.source_channels == 2
    assert result.duration_s == pytest.approx(1.5)


def test_speechcommands_flac_is_16k_three_seconds() -> None:
    result = decode_path(str(VOICE / "speechcommands" / "03401e93_0.flac"), SETTINGS)
    assert isinstance(result, DecodedAudio)
    assert result.source_rate_hz == 16000 and len(result.pcm16k) == 48000
    assert result.pcm16k.dtype == np.float32


def test_fsdd_8k_is_valid_and_resampled_to_16k() -> None:
    path = VOICE / "fsdd" / "george_00_97410.flac"
    info = sf.info(str(path))
    result = decode_path(str(path), SETTINGS)
    assert isinstance(result, DecodedAudio)
    assert info.samplerate == 8000 and result.source_rate_hz == 8000
    assert len(result.pcm16k) == 2 * info.frames


def test_44k1_stereo_wav_and_ogg_decode() -> None:
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 500 * t)] * 2, axis=1)
    wav = decode_bytes(_wav_bytes(stereo, 44100), SETTINGS)
    assert isinstance(wav, DecodedAudio) and len(wav.pcm16k) == 16000
    assert abs(_peak_hz(wav.pcm16k, SAMPLE_RATE_HZ) - 500) < 2
    ogg = decode_bytes(_wav_bytes(stereo, 44100, subtype="VORBIS", fmt="OGG"), SETTINGS)
    assert isinstance(ogg, DecodedAudio) and abs(len(ogg.pcm16k) - 16000) < 200


@pytest.mark.parametrize("rate", [4000, 192000])
def test_wrong_sample_rates_are_technical(rate: int) -> None:
    x = np.zeros(rate * 2, dtype=np.float32)
    result = decode_bytes(_wav_bytes(x, rate), SETTINGS)
    assert not isinstance(result, DecodedAudio)
    assert result.kind is CheckKind.VOICE_QUALITY
    assert result.outcome is Outcome.TECHNICAL and result.code == "unsupported_sample_rate"
    assert result.details["sample_rate_hz"] == rate


def test_zero_rate_pcm_is_technical_not_a_crash() -> None:
    result = decode_pcm(np.zeros(1000, dtype=np.int16), 0, 1, SETTINGS)
    assert not isinstance(result, DecodedAudio) and result.code == "unsupported_sample_rate"


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty_audio"),
        (b"not audio at all" * 100, "undecodable_audio"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)), "undecodable_audio"),
    ],
)
def test_corrupt_bytes_are_technical(data: bytes, code: str) -> None:
    result = decode_bytes(data, SETTINGS)
    assert not isinstance(result, DecodedAudio)
    assert result.outcome is Outcome.TECHNICAL and result.code == code
    assert result.message


def test_truncated_flac_never_crashes() -> None:
    data = (VOICE / "speechcommands" / "03401e93_0.flac").read_bytes()
    for cut in (10, 100, len(data) // 2):
        result = decode_bytes(data[:cut], SETTINGS)
        if isinstance(result, DecodedAudio):
            assert result.pcm16k.dtype == np.float32
        else:
            assert result.outcome is Outcome.TECHNICAL


def test_too_short_recording_is_technical() -> None:
    result = decode_bytes(_wav_bytes(np.zeros(1600, dtype=np.float32), 16000), SETTINGS)
    assert not isinstance(result, DecodedAudio) and result.code == "too_short"


def test_missing_file_is_technical() -> None:
    result = decode_path(str(VOICE / "no-such-file.flac"), SETTINGS)
    assert not isinstance(result, DecodedAudio) and result.code == "unreadable_file"


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import identity.voice.audio, identity.voice.quality, identity.voice.vad\n"
        "import identity.voice.scoring, identity.voice.template, identity.voice.pipeline\n"
        "import identity.voice.worker, identity.voice.engines\n"
        "heavy = ('torch', 'resemblyzer', 'silero_vad', 'speechbrain', 'librosa')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
