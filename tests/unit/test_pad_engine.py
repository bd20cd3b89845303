"""MiniFASNet built from the published checkpoints, scored on the shared live/attack images."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from identity.checks import CheckKind, Outcome
from identity.geometry import FaceBox
from identity.models import verified_path
from identity.pad.config import PadSettings

if TYPE_CHECKING:
    from identity.pad.engine import PadEngine

SHARED = Path(__file__).parents[2] / ".." / "shared"
MODELS = SHARED / "models"  # manifest locations are "dir:pad/...": the shared folder has the same layout
PAD_DATA = SHARED / "data" / "pad"


@pytest.fixture(scope="module")
def engine() -> PadEngine:
    from identity.pad.engine import PadEngine

    return PadEngine(MODELS, PadSettings())


@pytest.mark.parametrize("name", ["minifasnet_v2_2.7", "minifasnet_v1se_4.0"])
def test_checkpoints_load_strictly_and_give_three_classes(name: str) -> None:
    import torch

    from identity.pad.net import load_minifasnet

    path, _ = verified_path(name, MODELS)
    net = load_minifasnet(path)  # load_state_dict(strict=True) inside
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == {k.removeprefix("module.") for k in sd}
    with torch.inference_mode():
        out = net(torch.zeros(2, 3, 80, 80))
    assert out.shape == (2, 3)


def _bgr(name: str) -> np.ndarray:
    import cv2

    img = cv2.imread(str(PAD_DATA / name))
    assert img is not None
    return np.asarray(img)


def test_live_capture_passes_and_screen_attack_fails(engine: PadEngine) -> None:
    live = engine.score_frame_bgr(_bgr("image_T1.jpg"))
    attack = engine.score_frame_bgr(_bgr("fake_003.jpg"))
    assert live.outcome is Outcome.PASS and live.score is not None and live.score > 0.9
    assert attack.outcome is Outcome.FAIL and attack.code == "presentation_attack"
    assert attack.kind is CheckKind.PAD and attack.threshold == PadSettings().live_threshold
    assert attack.model is not None and attack.model.name == "minifasnet_v2_2.7+minifasnet_v1se_4.0"
    assert set(attack.details["per_model"]) == {"minifasnet_v2_2.7", "minifasnet_v1se_4.0"}


def test_tight_crop_is_not_what_the_model_sees(engine: PadEngine) -> None:
    """The same face judged on a frame cropped to the face box alone loses the context the model needs."""
    frame = _bgr("image_T1.jpg")
    box = engine.detect_face_bgr(frame)
    assert box is not None
    full = engine.score_bgr(frame, box)
    tight = frame[box.top : box.bottom, box.left : box.right]
    tight_result = engine.score_bgr(np.ascontiguousarray(tight), FaceBox(0, 0, box.width, box.height))
    assert full.score is not None and tight_result.score is not None
    assert full.score != pytest.approx(tight_result.score, abs=1e-3)


def test_no_face_and_small_face_are_inconclusive(engine: PadEngine) -> None:
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert engine.score_frame_bgr(blank).code == "no_face"
    small = engine.score_bgr(_bgr("image_T1.jpg"), FaceBox(10, 10, 30, 30))
    assert (small.outcome, small.code) == (Outcome.INCONCLUSIVE, "face_too_small")


def test_worker_without_models_reports_technical(tmp_path: Path) -> None:
    from identity.pad import worker

    worker.init_worker(str(tmp_path), PadSettings().model_dump())
    try:
        result = worker.pad_score_rgb(np.zeros((100, 100, 3), np.uint8), (10, 10, 90, 90))
    finally:
        worker._state.clear()
    assert result.outcome is Outcome.TECHNICAL and result.code == "pad_models_unavailable"


@pytest.mark.slow
def test_spawn_pool_scores_rgb_and_bgr_alike(engine: PadEngine) -> None:
    from identity.pad.worker import init_worker, pad_score_bgr, pad_score_rgb

    frame_bgr = _bgr("true_001.jpg")
    box = engine.detect_face_bgr(frame_bgr)
    assert box is not None
    frame_rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
    pool_args = (str(MODELS), PadSettings().model_dump())
    ctx = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker, initargs=pool_args) as pool:
        from_bgr = pool.submit(pad_score_bgr, frame_bgr, box).result(timeout=120)
        as_tuple = (box.left, box.top, box.right, box.bottom)
        from_rgb = pool.submit(pad_score_rgb, frame_rgb, as_tuple).result(timeout=120)
    assert from_bgr.outcome is Outcome.PASS
    assert from_rgb.score == pytest.approx(from_bgr.score, abs=1e-5)


def test_eval_reads_videos_and_labels_csv(tmp_path: Path) -> None:
    import cv2

    from identity.pad.evaluate import Label, evaluate_dir

    frame = _bgr("image_T1.jpg")
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (w, h))
    for _ in range(20):
        writer.write(frame)
    writer.release()
    (tmp_path / "labels.csv").write_text("path,label,attack_type\nclip.avi,live,\n")
    report = evaluate_dir(tmp_path, MODELS, PadSettings())
    assert [(i.label, i.frames) for i in report.items] == [(Label.LIVE, 4)]  # 2 s at 10 fps, every 0.5 s
    assert report.items[0].outcome is Outcome.PASS and report.bpcer == 0.0
