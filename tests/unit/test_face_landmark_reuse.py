"""Near-duplicate frames reuse identity work only: their landmarks are fitted on their own pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from identity.face.config import FaceSettings
from identity.face.engine import FaceEngine, thumbnail

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    # A loose near-duplicate threshold, so that a frame shifted by 3 px counts as a duplicate.
    return FaceEngine(MODELS, FaceSettings(duplicate_frame_mad=10.0))


def test_near_duplicate_frame_gets_its_own_landmarks(engine: FaceEngine) -> None:
    face = np.ascontiguousarray(data.astronaut())
    moved = np.ascontiguousarray(np.roll(face, 3, axis=1))
    mad = float(np.abs(thumbnail(face) - thumbnail(moved)).mean())
    assert mad < engine.settings.duplicate_frame_mad
    analyses, dup_of = engine.analyse_frames([face, moved])
    assert dup_of[0] is None and dup_of[1] == 0
    first, second = analyses[0], analyses[1]
    assert second is not first and second.reused_from == 0
    assert second.embedding is first.embedding  # identity is shared...
    shift = second.faces[0].landmarks.astype(float).mean(axis=0) - first.faces[0].landmarks.mean(axis=0)
    assert shift[0] == pytest.approx(3.0, abs=1.0)  # ...the landmarks follow the frame's own pixels
    assert abs(shift[1]) < 1.0
