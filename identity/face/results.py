"""Plain, picklable face results and the template format (light: numpy only).

Coordinates are pixels of the analysed RGB image; boxes are (top, right, bottom, left) like
face_recognition; landmarks are dlib's 68-point iBUG layout, int32 array of shape (68, 2) as (x, y).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckResult, ModelStamp
from identity.geometry import FaceBox

EMBEDDING_DIM = 128
_MAGIC = b"KZFT"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBI")  # magic, format version, JSON header length

Embedding = npt.NDArray[np.float32]


class TemplateError(ValueError):
    """Template bytes are corrupt, truncated or of an unknown format."""


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Measured quality of one face: the inputs the gates judge."""

    face_px: int
    sharpness: float
    brightness: float
    saturated_fraction: float
    yaw: float
    roll_deg: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for CheckResult details."""
        return {
            "face_px": self.face_px,
            "sharpness": round(self.sharpness, 2),
            "brightness": round(self.brightness, 2),
            "saturated_fraction": round(self.saturated_fraction, 4),
            "yaw": round(self.yaw, 4),
            "roll_deg": round(self.roll_deg, 2),
        }

    def score(self) -> float:
        """A single ranking score (higher is better) for choosing best frames: sharp, large, frontal."""
        return float(np.log1p(self.sharpness) + np.log(max(self.face_px, 1)) - 3.0 * abs(self.yaw))


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One detected face: box, 68 landmarks (68, 2) int32 (x, y), detector that found it."""

    box: FaceBox
    landmarks: npt.NDArray[np.int32]
    detector: str


@dataclass(slots=True)
class FaceAnalysis:
    """Everything the engine saw in one image.

    `faces` is sorted largest first; `primary` indexes the face that was judged (None when none);
    `reused_from` names the frame whose quality/embedding a near-duplicate frame shares;
    `quality` is the gate's CheckResult (PASS or why not); `embedding` is the L2-normalised (128,)
    float32 embedding of the primary face, or None when it was not encoded.
    """

    faces: list[FaceObservation]
    primary: int | None
    quality: CheckResult
    measures: FaceQuality | None
    embedding: Embedding | None
    model: ModelStamp
    image_shape: tuple[int, int]
    timing_ms: dict[str, float] = field(default_factory=dict)
    # Index (in its frame sequence) of the frame whose identity analysis this one reuses; its faces'
    # landmarks are still its own (FaceEngine.analyse_frames).
    reused_from: int | None = None

    @property
    def primary_face(self) -> FaceObservation | None:
        """The judged face, if any."""
        return None if self.primary is None else self.faces[self.primary]

    def summary(self) -> dict[str, Any]:
        """Small JSON-able summary for reviewer details."""
        face = self.primary_face
        return {
            "faces": len(self.faces),
            "box": face.box.as_list() if face else None,
            "detector": face.detector if face else None,
            "quality": self.quality.code,
            "measures": self.measures.to_dict() if self.measures else None,
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
        }


@dataclass(frozen=True, slots=True)
class Template:
    """An enrolled face: (n, 128) float32 L2-normalised embeddings plus metadata.

    `model` must equal the verifying engine's stamp: embeddings of different weights are not comparable.
    """

    embeddings: Embedding
    model: ModelStamp
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def now() -> str:
        """UTC ISO-8601 timestamp for `created_at`."""
        return datetime.now(UTC).isoformat(timespec="seconds")


def template_to_bytes(template: Template) -> bytes:
    """Serialise a template: magic, version, JSON header, then float32 little-endian (n, 128)."""
    emb = np.ascontiguousarray(template.embeddings, dtype="<f4")
    header = json.dumps(
        {
            "model": template.model.to_dict(),
            "created_at": template.created_at,
            "metadata": template.metadata,
            "shape": list(emb.shape),
        },
        sort_keys=True,
    ).encode()
    return _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(header)) + header + emb.tobytes()


def template_from_bytes(data: bytes) -> Template:
    """Inverse of `template_to_bytes`; raises TemplateError on anything malformed."""
    if len(data) < _HEADER.size:
        raise TemplateError("template too short")
    magic, version, header_len = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _FORMAT_VERSION:
        raise TemplateError(f"unknown template format {magic!r} v{version}")
    start = _HEADER.size
    try:
        header = json.loads(data[start : start + header_len])
        shape = tuple(int(x) for x in header["shape"])
        model = ModelStamp(**header["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TemplateError(f"bad template header: {exc}") from exc
    if len(shape) != 2 or shape[1] != EMBEDDING_DIM or shape[0] < 1:
        raise TemplateError(f"bad embedding shape {shape}")
    body = data[start + header_len :]
    if len(body) != shape[0] * shape[1] * 4:
        raise TemplateError("template body length does not match its shape")
    emb = np.frombuffer(body, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(emb)):
        raise TemplateError("template holds non-finite values")
    return Template(
        embeddings=emb, model=model, created_at=str(header["created_at"]), metadata=dict(header["metadata"])
    )
