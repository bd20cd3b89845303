"""A breath photo job detects each photo once and encodes it once (the mirror only near the decision band)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from identity.face import worker as face_worker
from identity.face.config import FaceSettings
from identity.face.decode import DecodedImage, decode_image
from sobriety.config import SobrietySettings
from sobriety.worker import analyse_photos_job
from tests.api.test_breath_api import ENROL, GENUINE, LFW, MODELS_DIR, SOMEONE_ELSE, station_photos


@pytest.fixture(scope="module")
def engine() -> Any:
    face_worker.init_worker(str(Path(MODELS_DIR).resolve()), FaceSettings().model_dump(mode="json"))
    return face_worker.current_engine()


def test_each_photo_is_detected_once_and_encoded_once(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rgbs = []
    for rel in ENROL:
        decoded = decode_image((LFW / rel).read_bytes(), engine.settings)
        assert isinstance(decoded, DecodedImage)
        rgbs.append(decoded.rgb)
    template, _ = engine.enrol(rgbs)
    assert template is not None
    photos = [(f"p{i}", data) for i, data in enumerate(station_photos(GENUINE))]

    calls = {"detect": 0, "chips": 0}
    detect, encode = engine.detect, engine.encode_chips

    def counted_detect(*a: Any, **k: Any) -> Any:
        calls["detect"] += 1
        return detect(*a, **k)

    def counted_encode(chips: Any, num_jitters: int = 0, flip: bool = True) -> Any:
        calls["chips"] += len(chips) * (2 if flip else 1)
        return encode(chips, num_jitters, flip)

    monkeypatch.setattr(engine, "detect", counted_detect)
    monkeypatch.setattr(engine, "encode_chips", counted_encode)
    settings = SobrietySettings()
    result = analyse_photos_job(photos, template.embeddings, template.model, settings.model_dump(mode="json"))
    assert len(result.analyses) == len(photos) and not result.unreadable
    assert calls["detect"] == len(photos)
    distances = [a.identity.score for a in result.analyses if a.identity is not None]
    assert len(distances) == len(photos) and np.all(np.isfinite(distances))
    # One network pass per photo; a second only for photos near the accept/reject band (genuine occluded
    # photos often are: their distances sit just under the accept threshold).
    assert len(photos) <= calls["chips"] <= 2 * len(photos)

    # Someone else's photos are far beyond the reject distance: exactly one pass each.
    calls.update(detect=0, chips=0)
    other = [(f"q{i}", data) for i, data in enumerate(station_photos(SOMEONE_ELSE))]
    result = analyse_photos_job(other, template.embeddings, template.model, settings.model_dump(mode="json"))
    assert all(a.identity is not None and a.identity.code == "mismatch" for a in result.analyses)
    assert calls == {"detect": len(other), "chips": len(other)}
