"""Quality gates, enrolment and verification with the real dlib engine on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from identity.checks import CheckKind, Outcome
from identity.face.config import FaceSettings
from identity.face.decode import DecodedImage, decode_image
from identity.face.engine import FaceEngine
from identity.face.results import Template, template_from_bytes, template_to_bytes

REPO = Path(__file__).resolve().parents[2]
LFW = REPO / ".." / "shared" / "data" / "faces" / "lfw-dev"
MODELS = REPO / "var" / "models"  # face weights resolve inside face_recognition_models


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(MODELS, FaceSettings())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def _lfw(person: str, n: int) -> np.ndarray:
    """The n-th (0-based, sorted) image of a person in the LFW dev set."""
    path = sorted((LFW / person).glob("*.jpg"))[n]
    decoded = decode_image(path.read_bytes(), FaceSettings())
    assert isinstance(decoded, DecodedImage)
    return decoded.rgb


def test_astronaut_passes_with_landmarks_and_stamp(engine: FaceEngine, astronaut: np.ndarray) -> None:
    a = engine.analyse(astronaut)
    assert a.quality.outcome is Outcome.PASS and a.quality.code == "quality_ok"
    assert len(a.faces) == 1 and a.faces[0].landmarks.shape == (68, 2)
    assert a.embedding is not None and a.embedding.shape == (128,)
    assert abs(float(np.linalg.norm(a.embedding)) - 1.0) < 1e-4
    assert a.model.name == "dlib_resnet_face_v1" and len(a.model.weights_sha256) == 64


def test_dark_image_is_too_dark(engine: FaceEngine, astronaut: np.ndarray) -> None:
    a = engine.analyse((astronaut * 0.12).astype(np.uint8))
    assert a.quality.code == "too_dark" and a.quality.outcome is Outcome.INCONCLUSIVE
    assert "dark" in a.quality.message and a.embedding is None


def test_blurred_image_is_blurry(engine: FaceEngine, astronaut: np.ndarray) -> None:
    a = engine.analyse(cv2.GaussianBlur(astronaut, (0, 0), 2.5))
    assert a.quality.code == "blurry" and a.quality.outcome is Outcome.INCONCLUSIVE


def test_tiny_face_says_move_closer(engine: FaceEngine, astronaut: np.ndarray) -> None:
    a = engine.analyse(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA))
    assert a.quality.code == "face_too_small" and "closer" in a.quality.message.lower()


def test_two_faces_side_by_side(engine: FaceEngine, astronaut: np.ndarray) -> None:
    a = engine.analyse(np.concatenate([astronaut, astronaut], axis=1))
    assert a.quality.code == "several_faces" and a.quality.outcome is Outcome.INCONCLUSIVE
    assert len(a.faces) >= 2


def test_blank_image_has_no_face(engine: FaceEngine) -> None:
    a = engine.analyse(np.full((240, 320, 3), 128, np.uint8))
    assert a.quality.code == "no_face" and a.quality.outcome is Outcome.INCONCLUSIVE and not a.faces


def test_grey_and_rgba_arrays_are_accepted(engine: FaceEngine, astronaut: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert engine.analyse(grey).quality.code == "quality_ok"
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert engine.analyse(rgba).quality.code == "quality_ok"


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 0, 3), np.uint8), np.zeros((10, 10, 5), np.uint8), np.zeros((50, 50, 3), np.float64)]
)
def test_unusable_arrays_are_technical(engine: FaceEngine, bad: np.ndarray) -> None:
    a = engine.analyse(bad)
    assert a.quality.outcome is Outcome.TECHNICAL and a.quality.code == "image_unusable"


def test_enrol_and_verify_same_and_other_person(engine: FaceEngine) -> None:
    template, results = engine.enrol([_lfw("Hugo_Chavez", n) for n in (0, 1, 2)])
    assert template is not None, [r.code for r in results]
    assert results[-1].code == "enrolled" and template.embeddings.shape[1] == 128
    template = template_from_bytes(template_to_bytes(template))

    same = engine.verify_image(template, _lfw("Hugo_Chavez", 3))
    assert same.kind is CheckKind.FACE and same.outcome is Outcome.PASS, same
    assert same.model is not None and same.threshold is not None and same.score is not None

    other = engine.verify_image(template, _lfw("Edmund_Stoiber", 0))
    assert other.outcome is Outcome.FAIL and other.code == "mismatch", other
    assert other.score is not None and other.score > same.score

    session = engine.verify_frames(template, [_lfw("Hugo_Chavez", n) for n in (4, 6, 7, 8)])
    assert session.outcome is Outcome.PASS, session
    assert len(session.details["frames"]) == 4 and session.details["fused_from"]
    assert all("box" in f for f in session.details["frames"])

    again, res2 = engine.enrol([_lfw("Hugo_Chavez", n) for n in (5, 7, 8)], previous=template)
    assert again is not None and res2[-1].code == "enrolled", [r.code for r in res2]
    assert again.metadata["replaces_created_at"] == template.created_at


def test_enrol_rejects_unusable_images(engine: FaceEngine, astronaut: np.ndarray) -> None:
    template, results = engine.enrol(
        [np.full((200, 200, 3), 10, np.uint8), (astronaut * 0.1).astype(np.uint8)]
    )
    assert template is None
    assert results[-1].code == "too_few_good_images" and results[-1].outcome is not Outcome.FAIL


def test_session_of_dark_frames_is_inconclusive_not_fail(engine: FaceEngine, astronaut: np.ndarray) -> None:
    template = Template(
        embeddings=engine.analyse(astronaut).embedding[None, :],  # type: ignore[index]
        model=engine.stamp,
        created_at=Template.now(),
    )
    dark = [np.roll((astronaut * 0.12).astype(np.uint8), k * 9, axis=1) for k in range(3)]
    result = engine.verify_frames(template, dark)
    assert result.outcome is Outcome.INCONCLUSIVE and result.code == "too_few_good_frames"
    assert "dark" in result.message


def test_template_from_other_model_is_technical(engine: FaceEngine, astronaut: np.ndarray) -> None:
    from identity.checks import ModelStamp

    foreign = Template(
        embeddings=np.ones((1, 128), np.float32) / np.sqrt(128),
        model=ModelStamp("other", "9", "0" * 64),
        created_at=Template.now(),
    )
    assert engine.verify_image(foreign, astronaut).code == "template_model_mismatch"


def test_a_small_face_in_a_large_photo_is_found_at_an_intermediate_scale(
    engine: FaceEngine, astronaut: np.ndarray
) -> None:
    # A 2400x1800 photo with the astronaut enlarged to 1024 px in the middle: the face (~180 px) is ~24 px
    # in the fast 320 px pass, too small for HOG's 80 px window; the 1280 px pass finds it, without the
    # full-resolution upsampled pass (seconds at 12 MP).
    photo = np.full((1800, 2400, 3), 110, np.uint8)
    photo[388:1412, 688:1712] = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    faces = engine.detect(photo)
    assert faces and faces[0].detector == "hog_mid"
    before = FaceEngine(MODELS, FaceSettings(detect_intermediate_scales=False)).detect(photo)
    assert before and before[0].detector == "hog_full"
    # The same face, boxes within a few pixels, in full-resolution coordinates.
    a, b = faces[0].box, before[0].box
    assert abs(a.left - b.left) < 0.1 * b.width and abs(a.right - b.right) < 0.1 * b.width
    embedding = engine.analyse(astronaut).embedding
    assert embedding is not None
    template = Template(embeddings=embedding[None, :], model=engine.stamp, created_at="")
    assert engine.verify_image(template, photo).outcome is Outcome.PASS
