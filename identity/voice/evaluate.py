"""Speaker-verification evaluation on a `path,speaker` manifest (used by `kuzet eval voice`).

Every unordered pair of clips is a trial: same speaker = genuine, different = impostor. Two systems are
scored in the same run on the same trials:

- `baseline`: plain resemblyzer usage (`preprocess_wav`, `embed_utterance` defaults, cosine);
- `pipeline`: our intake (16 kHz mono), silero VAD trimming, partial-window embedding, cosine, then
  cohort normalisation (settings.score_norm) against the shipped cohort.

Speakers that are in the shipped cohort are removed from the trials (the cohort must be held out).
Runs the engine in this process: an offline command, never the API.
"""

from __future__ import annotations

import csv
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.voice.audio import DecodedAudio, decode_path
from identity.voice.config import ScoreNorm, VoiceSettings
from identity.voice.engines import Embedding
from identity.voice.pipeline import VoicePipeline
from identity.voice.scoring import Cohort, normalised_score

FMR_POINTS = (0.01, 0.001)
_SECONDS_PER_REPORT = 3.0  # timing is reported per 3 s of audio


@dataclass(frozen=True)
class Clip:
    """One manifest row."""

    path: Path
    speaker: str


def read_manifest(manifest: Path, root: Path, speaker_prefix: str | None = None) -> list[Clip]:
    """Rows of a CSV with `path` (relative to root) and `speaker` columns, optionally filtered by prefix."""
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    clips = [Clip(root / r["path"], r["speaker"]) for r in rows]
    if speaker_prefix:
        clips = [c for c in clips if c.speaker.startswith(speaker_prefix)]
    return clips


def build_trials(speakers: list[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All unordered index pairs split into (genuine, impostor)."""
    genuine: list[tuple[int, int]] = []
    impostor: list[tuple[int, int]] = []
    for i, j in itertools.combinations(range(len(speakers)), 2):
        (genuine if speakers[i] == speakers[j] else impostor).append((i, j))
    return genuine, impostor


def det_curve(
    genuine: npt.ArrayLike, impostor: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(fmr, fnmr, thresholds) for every distinct score used as threshold (accept if score >= t)."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    thr = np.unique(np.concatenate([g, imp, [np.inf]]))
    fnmr = np.searchsorted(g, thr, side="left") / g.size
    fmr = 1.0 - np.searchsorted(imp, thr, side="left") / imp.size
    return fmr, fnmr, thr


def eer(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> float:
    """Equal error rate: the mean of FMR and FNMR where they cross (between adjacent thresholds)."""
    fmr, fnmr, _ = det_curve(genuine, impostor)
    i = int(np.argmax(fnmr >= fmr))  # first threshold where misses reach false matches
    if i == 0:
        return float((fmr[0] + fnmr[0]) / 2)
    # the crossing lies between i-1 and i; take the closer of the two operating points' means
    cand = [(abs(fmr[k] - fnmr[k]), (fmr[k] + fnmr[k]) / 2) for k in (i - 1, i)]
    return float(min(cand)[1])


def fnmr_at_fmr(genuine: npt.ArrayLike, impostor: npt.ArrayLike, target: float) -> float:
    """Lowest FNMR among thresholds whose FMR is at most `target`."""
    fmr, fnmr, _ = det_curve(genuine, impostor)
    ok = fmr <= target
    return float(fnmr[ok].min()) if ok.any() else 1.0


@dataclass
class SystemResult:
    """Scores and figures of one system on the trials."""

    name: str
    description: str
    genuine: npt.NDArray[np.float64]
    impostor: npt.NDArray[np.float64]

    def metrics(self) -> dict[str, float]:
        """EER and FNMR at the FMR points, as fractions."""
        out = {"eer": eer(self.genuine, self.impostor)}
        for p in FMR_POINTS:
            out[f"fnmr_at_fmr_{p:g}"] = fnmr_at_fmr(self.genuine, self.impostor, p)
        return out


@dataclass
class EvalReport:
    """Everything `kuzet eval voice` prints."""

    n_clips: int
    n_speakers: int
    n_genuine: int
    n_impostor: int
    excluded_speakers: list[str]
    systems: list[SystemResult]
    load_s: dict[str, float]
    s_per_3s_audio: dict[str, float]
    gate_codes: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    cohort_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-trial scores)."""
        return {
            "n_clips": self.n_clips,
            "n_speakers": self.n_speakers,
            "n_genuine_trials": self.n_genuine,
            "n_impostor_trials": self.n_impostor,
            "excluded_cohort_speakers": self.excluded_speakers,
            "cohort": self.cohort_source,
            "systems": {s.name: {"description": s.description, **s.metrics()} for s in self.systems},
            "model_load_s": self.load_s,
            "s_per_3s_audio": self.s_per_3s_audio,
            "quality_gate_codes": self.gate_codes,
            "settings": self.settings,
        }


def _decode_all(clips: list[Clip], settings: VoiceSettings) -> list[DecodedAudio]:
    out: list[DecodedAudio] = []
    for clip in clips:
        decoded = decode_path(str(clip.path), settings)
        if not isinstance(decoded, DecodedAudio):
            raise ValueError(f"{clip.path}: {decoded.code}: {decoded.message}")
        out.append(decoded)
    return out


def _scores(
    emb: list[Embedding], pairs: list[tuple[int, int]], cohort: Cohort | None, norm: ScoreNorm, top_k: int
) -> npt.NDArray[np.float64]:
    return np.array(
        [normalised_score(emb[i], emb[j], cohort, norm, top_k) for i, j in pairs], dtype=np.float64
    )


def decode_clips(clips: list[Clip], settings: VoiceSettings) -> list[DecodedAudio]:
    """Decode every clip to 16 kHz mono; ValueError naming the first that cannot be used."""
    return _decode_all(clips, settings)


def embed_clips(
    pipeline: VoicePipeline, audio: list[DecodedAudio]
) -> tuple[list[Embedding], dict[str, int], float]:
    """Pipeline embeddings of every clip: (embeddings, quality-gate code counts, seconds spent).

    Evaluation scores every clip, also those the gate would refuse (they are counted).
    """
    t0 = time.perf_counter()
    gate_codes: dict[str, int] = {}
    emb: list[Embedding] = []
    for a in audio:
        prepared = pipeline.prepare(a.pcm16k)
        gate_codes[prepared.quality.code] = gate_codes.get(prepared.quality.code, 0) + 1
        emb.append(pipeline.embed(prepared))
    return emb, gate_codes, time.perf_counter() - t0


def baseline_embeddings(audio: list[DecodedAudio]) -> tuple[list[Embedding], float, float]:
    """Plain resemblyzer: (embeddings, load seconds, embedding seconds)."""
    t0 = time.perf_counter()
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder(device="cpu", verbose=False)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = [encoder.embed_utterance(preprocess_wav(a.pcm16k, 16000)).astype(np.float32) for a in audio]
    return emb, load_s, time.perf_counter() - t0


def evaluate(
    manifest: Path,
    root: Path,
    models_dir: Path,
    settings: VoiceSettings,
    speaker_prefix: str | None = None,
    with_baseline: bool = True,
) -> EvalReport:
    """Score every trial of the manifest with the baseline and our pipeline; return figures and scores."""
    t0 = time.perf_counter()
    pipeline = VoicePipeline.load(models_dir, settings)
    load_s = {"pipeline": time.perf_counter() - t0}
    cohort = pipeline.cohort
    cohort_speakers = set(cohort.speakers) if cohort else set()
    clips = read_manifest(manifest, root, speaker_prefix)
    excluded = sorted({c.speaker for c in clips if c.speaker in cohort_speakers})
    clips = [c for c in clips if c.speaker not in cohort_speakers]
    if len({c.speaker for c in clips}) < 2:
        raise ValueError("need at least two speakers outside the cohort to evaluate")
    audio = _decode_all(clips, settings)
    total_audio_s = sum(a.duration_s for a in audio)
    genuine, impostor = build_trials([c.speaker for c in clips])
    if not genuine:
        raise ValueError("no same-speaker trials: each speaker needs at least two clips")

    emb, gate_codes, embed_s = embed_clips(pipeline, audio)
    per3 = {"pipeline": embed_s / total_audio_s * _SECONDS_PER_REPORT}

    k = settings.asnorm_top_k
    norm = settings.score_norm if cohort is not None else ScoreNorm.NONE
    systems: list[SystemResult] = []
    if with_baseline:
        base, base_load, base_s = baseline_embeddings(audio)
        load_s["baseline"] = base_load
        per3["baseline"] = base_s / total_audio_s * _SECONDS_PER_REPORT
        systems.append(
            SystemResult(
                "baseline",
                "resemblyzer preprocess_wav + embed_utterance defaults, cosine",
                _scores(base, genuine, None, ScoreNorm.NONE, k),
                _scores(base, impostor, None, ScoreNorm.NONE, k),
            )
        )
    base_desc = (
        f"16 kHz intake, {'VAD-trimmed, ' if settings.trim_silence else ''}"
        f"-30 dBFS, partials at {settings.partial_rate_hz} Hz"
    )
    norms = [norm] + [n for n in ScoreNorm if n is not norm and (cohort is not None or n is ScoreNorm.NONE)]
    for n in norms:
        name = "pipeline" if n is norm else f"pipeline_{n.value}"
        how = "cosine" if n is ScoreNorm.NONE else f"{n.value} against the shipped cohort"
        systems.append(
            SystemResult(
                name,
                f"{base_desc}, {how}" + (" (configured)" if n is norm else ""),
                _scores(emb, genuine, cohort, n, k),
                _scores(emb, impostor, cohort, n, k),
            )
        )
    return EvalReport(
        n_clips=len(clips),
        n_speakers=len({c.speaker for c in clips}),
        n_genuine=len(genuine),
        n_impostor=len(impostor),
        excluded_speakers=excluded,
        systems=systems,
        load_s=load_s,
        s_per_3s_audio=per3,
        gate_codes=gate_codes,
        settings=settings.model_dump(mode="json"),
        cohort_source=cohort.source if cohort else "none",
    )


def format_report(report: EvalReport) -> str:
    """Human-readable table of the figures."""
    lines = [
        f"clips {report.n_clips}, speakers {report.n_speakers}, "
        f"trials: {report.n_genuine} genuine, {report.n_impostor} impostor",
        f"cohort: {report.cohort_source}"
        + (
            f" (excluded from trials: {', '.join(report.excluded_speakers)})"
            if report.excluded_speakers
            else ""
        ),
        f"quality gate on these clips: {report.gate_codes}",
        f"{'system':16} {'EER':>7} {'FNMR@FMR1%':>11} {'FNMR@FMR0.1%':>13}  description",
    ]
    for s in report.systems:
        m = s.metrics()
        lines.append(
            f"{s.name:16} {m['eer'] * 100:6.2f}% {m['fnmr_at_fmr_0.01'] * 100:10.2f}% "
            f"{m['fnmr_at_fmr_0.001'] * 100:12.2f}%  {s.description}"
        )
    lines.append(
        "model load s: "
        + ", ".join(f"{k} {v:.2f}" for k, v in report.load_s.items())
        + "; s per 3 s of audio: "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in report.s_per_3s_audio.items())
    )
    return "\n".join(lines)
