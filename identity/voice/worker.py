"""Worker-process entry points for the voice engines (ProcessPoolExecutor, spawn context).

The service owns the pool:

    ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                        initializer=init_worker, initargs=(str(models_dir), voice_settings.model_dump()))

and submits the module-level `*_job` functions. Arguments and results are plain picklable values:
numpy arrays (16 kHz mono float32), bytes, and CheckResult dicts (`CheckResult.from_dict`). A worker
whose engine failed to load answers every job with a TECHNICAL result instead of raising.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, Outcome
from identity.voice.audio import Pcm16k
from identity.voice.config import VoiceSettings
from identity.voice.pipeline import VoicePipeline
from identity.voice.template import TemplateError, template_from_bytes, template_to_bytes


@dataclass
class _WorkerState:
    pipeline: VoicePipeline | None = None
    error: str = ""


# One per worker process, written once by init_worker: a process-pool initializer can only hand
# state to later jobs through the module.
_STATE = _WorkerState()


def init_worker(models_dir: str, settings: dict[str, Any]) -> None:
    """Pool initializer: load VAD, engine, cohort and calibration once per process."""
    from identity.models import ModelError

    try:
        _STATE.pipeline = VoicePipeline.load(Path(models_dir), VoiceSettings.model_validate(settings))
        _STATE.error = ""
    except (ModelError, OSError, RuntimeError, ValueError) as exc:
        _STATE.pipeline = None
        _STATE.error = str(exc)


def make_executor(models_dir: Path, settings: VoiceSettings, processes: int) -> ProcessPoolExecutor:
    """A spawn pool whose workers run `init_worker`; the caller owns and shuts it down."""
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(str(models_dir), settings.model_dump(mode="json")),
    )


def warm_up() -> None:
    """Run the loaded engine once on 1.5 s of synthetic noise (its first forward pass is the slow one)."""
    p = _STATE.pipeline
    if p is not None:
        noise = 0.05 * np.random.default_rng(0).standard_normal(24000)
        p.engine.embed(_pcm(noise.astype(np.float32)))


def _unavailable() -> dict[str, Any]:
    return CheckResult(
        CheckKind.VOICE,
        Outcome.TECHNICAL,
        "engine_unavailable",
        "The voice engine is not available; the check will be retried.",
        details={"error": _STATE.error},
    ).to_dict()


def _pcm(samples: npt.NDArray[np.float32]) -> Pcm16k:
    return Pcm16k(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))


def engine_info_job() -> dict[str, Any]:
    """The loaded engine's and VAD's stamps, or the load error."""
    p = _STATE.pipeline
    if p is None:
        return {"error": _STATE.error}
    vad = p.detector.stamp
    return {
        "engine": p.engine.stamp.to_dict(),
        "vad": p.detector.name,
        "vad_model": vad.to_dict() if vad else None,
        "cohort": p.cohort.source if p.cohort else None,
        "calibrated": p.calibration is not None,
    }


def quality_job(pcm16k: npt.NDArray[np.float32]) -> dict[str, Any]:
    """VOICE_QUALITY result dict for 16 kHz mono float32 audio."""
    p = _STATE.pipeline
    if p is None:
        return _unavailable()
    return p.prepare(_pcm(pcm16k)).quality.to_dict()


def embed_job(pcm16k: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32] | None, dict[str, Any]]:
    """(embedding or None, VOICE_QUALITY result dict); the embedding only when the gate passed."""
    p = _STATE.pipeline
    if p is None:
        return None, _unavailable()
    prepared = p.prepare(_pcm(pcm16k))
    if not prepared.quality.passed:
        return None, prepared.quality.to_dict()
    return p.embed(prepared), prepared.quality.to_dict()


def enrol_job(
    utterances: list[npt.NDArray[np.float32]], metadata: dict[str, Any] | None = None
) -> tuple[bytes | None, list[dict[str, Any]]]:
    """(template bytes or None, result dicts: each utterance's gate plus the VOICE summary)."""
    p = _STATE.pipeline
    if p is None:
        return None, [_unavailable()]
    template, results = p.enrol([_pcm(u) for u in utterances], metadata)
    return (template_to_bytes(template) if template else None), [r.to_dict() for r in results]


def verify_job(template: bytes, pcm16k: npt.NDArray[np.float32]) -> list[dict[str, Any]]:
    """[VOICE_QUALITY, VOICE] result dicts for one session's speech against template bytes."""
    p = _STATE.pipeline
    if p is None:
        return [_unavailable()]
    try:
        tpl = template_from_bytes(template)
    except TemplateError as exc:
        return [
            CheckResult(
                CheckKind.VOICE,
                Outcome.TECHNICAL,
                "bad_template",
                "The stored voice template is unreadable.",
                details={"error": str(exc)},
            ).to_dict()
        ]
    return [r.to_dict() for r in p.verify(tpl, _pcm(pcm16k))]


def spoken_digits_job(
    template: bytes, pcm16k: npt.NDArray[np.float32], expected: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """SPOKEN_DIGITS result dict: did the 16 kHz mono float32 audio say `expected` (digit-template bytes,
    `DigitSettings.model_dump()`)? Needs no loaded engine, so it answers even when the voice engine failed."""
    from identity.voice.config import DigitSettings
    from identity.voice.digits import DigitTemplateError, check_spoken_digits, templates_from_bytes

    try:
        templates = templates_from_bytes(template)
    except DigitTemplateError as exc:
        return CheckResult(
            CheckKind.SPOKEN_DIGITS,
            Outcome.TECHNICAL,
            "bad_template",
            "The stored digit templates are unreadable; enrol the digits again.",
            details={"error": str(exc)},
        ).to_dict()
    return check_spoken_digits(
        _pcm(pcm16k), expected, templates, DigitSettings.model_validate(settings)
    ).to_dict()
