"""The spawn worker pool round trip the service will use."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from skimage import data

from identity.checks import Outcome
from identity.face import worker
from identity.face.config import FaceSettings

REPO = Path(__file__).resolve().parents[2]


def test_spawn_pool_round_trip() -> None:
    astronaut = np.ascontiguousarray(data.astronaut())
    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker.init_worker,
        initargs=(str(REPO / "var" / "models"), FaceSettings().model_dump(mode="json")),
    ) as pool:
        analysis = pool.submit(worker.analyse_image, astronaut).result(timeout=120)
        assert analysis.quality.code == "quality_ok"
        assert analysis.faces[0].landmarks.shape == (68, 2)
        assert analysis.model.name == "dlib_resnet_face_v1"
        template, results = pool.submit(worker.enrol, [astronaut, astronaut[:, ::-1].copy()]).result(
            timeout=120
        )
        assert template is not None and results[-1].code == "enrolled"
        shifted = [np.roll(astronaut, k * 6, axis=1) for k in range(4)]
        session = pool.submit(worker.verify_frames, template, shifted).result(timeout=120)
        assert session.outcome is Outcome.PASS and session.model is not None
        assert session.details["n_frames"] == 4
        analyses = pool.submit(worker.analyse_frames, shifted).result(timeout=120)
        again = pool.submit(worker.verify_analyses, template, analyses).result(timeout=120)
        assert again.outcome is Outcome.PASS and again.score == session.score
