"""Scores: cosine, cohort normalisation (S-norm / AS-norm) and the FMR -> threshold calibration table.

Light module (numpy only). The shipped cohort (`cohort_<engine>.npz`) and calibration table
(`calibration.json`) are produced by `python -m identity.voice.build` (see identity/voice/README.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import ModelStamp
from identity.voice.config import ScoreNorm, VoiceSettings
from identity.voice.engines import Embedding

VOICE_DIR = Path(__file__).resolve().parent
CALIBRATION_PATH = VOICE_DIR / "calibration.json"
FMR_GRID = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
"""FMR points the calibration table is measured at."""


def cohort_path(engine_name: str) -> Path:
    """Where the shipped cohort for an engine lives."""
    return VOICE_DIR / f"cohort_{engine_name}.npz"


@dataclass(frozen=True)
class Cohort:
    """Embeddings of speakers who are never enrolled nor evaluated; shape (m, dim)."""

    embeddings: npt.NDArray[np.float32]
    engine: ModelStamp
    source: str
    speakers: tuple[str, ...] = ()

    def save(self, path: Path) -> None:
        """Write as .npz (no pickle)."""
        meta = json.dumps(
            {"engine": self.engine.to_dict(), "source": self.source, "speakers": list(self.speakers)},
            sort_keys=True,
        )
        with path.open("wb") as f:
            np.savez_compressed(f, embeddings=self.embeddings.astype(np.float32), meta=np.array(meta))

    @classmethod
    def load(cls, path: Path) -> Cohort:
        """Read a .npz written by `save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(
                z["embeddings"].astype(np.float32),
                ModelStamp(**meta["engine"]),
                meta["source"],
                tuple(meta.get("speakers", ())),
            )


def cosine(a: Embedding, b: Embedding) -> float:
    """Cosine similarity of two unit-norm embeddings, in [-1, 1]."""
    return float(np.dot(a, b))


def _side_stats(emb: Embedding, cohort: npt.NDArray[np.float32], top_k: int | None) -> tuple[float, float]:
    scores = cohort @ emb
    if top_k is not None and top_k < scores.size:
        scores = np.partition(scores, scores.size - top_k)[-top_k:]
    return float(scores.mean()), max(float(scores.std()), 1e-6)


def normalised_score(
    enrol: Embedding, test: Embedding, cohort: Cohort | None, norm: ScoreNorm, top_k: int
) -> float:
    """Verification score: cosine (norm NONE or no cohort) or the symmetric cohort z-score (S/AS-norm)."""
    raw = cosine(enrol, test)
    if norm is ScoreNorm.NONE or cohort is None:
        return raw
    k = top_k if norm is ScoreNorm.ASNORM else None
    m_e, s_e = _side_stats(enrol, cohort.embeddings, k)
    m_t, s_t = _side_stats(test, cohort.embeddings, k)
    return 0.5 * ((raw - m_e) / s_e + (raw - m_t) / s_t)


def score_unit(norm: ScoreNorm, cohort: Cohort | None) -> str:
    """Unit string for CheckResult details."""
    return "cosine" if norm is ScoreNorm.NONE or cohort is None else f"{norm.value} z-score"


def thresholds_at(
    impostor_scores: npt.NDArray[np.float64], fmrs: tuple[float, ...] = FMR_GRID
) -> list[dict[str, Any]]:
    """Per target FMR, the lowest threshold whose measured FMR (score >= threshold) is at most it."""
    imp = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    n = imp.size
    rows: list[dict[str, Any]] = []
    for fmr in fmrs:
        allowed = int(math.floor(fmr * n))
        thr = float(np.nextafter(imp[allowed], np.inf)) if allowed < n else float(imp[-1])
        rows.append(
            {
                "fmr": fmr,
                "threshold": thr,
                "measured_fmr": float(np.mean(imp >= thr)),
                "resolvable": fmr * n >= 1,
            }
        )
    return rows


@dataclass(frozen=True)
class Calibration:
    """FMR -> threshold tables, one per (engine name, score normalisation)."""

    entries: list[dict[str, Any]]
    source: str

    @classmethod
    def load(cls, path: Path = CALIBRATION_PATH) -> Calibration:
        """Read calibration.json."""
        raw = json.loads(path.read_text())
        return cls(list(raw["entries"]), str(raw.get("data", "")))

    def threshold_for(
        self, engine_name: str, norm: ScoreNorm, target_fmr: float
    ) -> tuple[float, dict[str, Any]]:
        """Threshold for a target FMR (log-FMR interpolation), plus details; KeyError when uncalibrated."""
        for entry in self.entries:
            if entry["engine"] == engine_name and entry["score_norm"] == norm.value:
                table = sorted(entry["table"], key=lambda r: r["fmr"])
                fmrs = np.log10([r["fmr"] for r in table])
                thrs = np.array([r["threshold"] for r in table])
                x = math.log10(target_fmr)
                thr = float(np.interp(x, fmrs, thrs))
                details = {
                    "target_fmr": target_fmr,
                    "calibration": entry.get("data", self.source),
                    "extrapolated": bool(x < fmrs[0] or x > fmrs[-1]),
                    "n_impostor_trials": entry.get("n_impostor_trials"),
                }
                return thr, details
        raise KeyError(f"no calibration for engine {engine_name!r} with score_norm {norm.value!r}")


def settings_norm(settings: VoiceSettings, cohort: Cohort | None) -> ScoreNorm:
    """The normalisation actually applied: NONE when no cohort matches the engine."""
    return settings.score_norm if cohort is not None else ScoreNorm.NONE
