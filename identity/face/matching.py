"""Scoring and decisions (light: numpy only).

Score: cosine distance between L2-normalised 128-d embeddings, 0 = identical, 2 = opposite; against a
template it is the mean distance to the template's embeddings (averaging keeps the single-pair
calibration conservative: it narrows the impostor spread rather than shifting it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.calibration import Thresholds
from identity.face.results import Embedding

SCORE_UNIT = (
    "cosine distance between L2-normalised dlib embeddings (0 identical .. 2 opposite; lower = more alike)"
)


def l2_normalise(vectors: npt.NDArray[np.floating[Any]]) -> Embedding:
    """Rows (or a single vector) scaled to unit L2 norm, float32."""
    arr = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    out: Embedding = (arr / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def distance_to_template(template: Embedding, probe: Embedding) -> float:
    """Mean cosine distance of a (128,) probe to (n, 128) template embeddings, both L2-normalised."""
    sims = np.atleast_2d(template).astype(np.float64) @ np.asarray(probe, dtype=np.float64)
    return float(np.mean(1.0 - sims))


def pairwise_distances(embeddings: Embedding) -> npt.NDArray[np.float64]:
    """(n, n) cosine distances of L2-normalised (n, 128) embeddings."""
    e = np.asarray(embeddings, dtype=np.float64)
    return np.asarray(1.0 - e @ e.T, dtype=np.float64)


def decide(
    distance: float,
    thresholds: Thresholds,
    model: ModelStamp,
    details: dict[str, Any] | None = None,
) -> CheckResult:
    """PASS below the calibrated threshold, FAIL above the false-fail bound, INCONCLUSIVE between."""
    info: dict[str, Any] = {
        "score_unit": SCORE_UNIT,
        "fail_above": thresholds.fail_above,
        "target_fmr": thresholds.target_fmr,
        "effective_fmr": thresholds.effective_fmr,
        "fmr_clamped_to_calibration": thresholds.clamped,
        "target_false_fail_rate": thresholds.target_false_fail_rate,
        **(details or {}),
    }
    if distance < thresholds.pass_below:
        outcome, code, message = Outcome.PASS, "match", "The face matches the enrolled person."
    elif distance > thresholds.fail_above:
        outcome, code, message = Outcome.FAIL, "mismatch", "The face does not match the enrolled person."
    else:
        outcome, code, message = (
            Outcome.INCONCLUSIVE,
            "borderline",
            "The face match is uncertain; a reviewer will compare the images.",
        )
    return CheckResult(
        kind=CheckKind.FACE,
        outcome=outcome,
        code=code,
        message=message,
        score=round(distance, 6),
        threshold=thresholds.pass_below,
        model=model,
        details=info,
    )
