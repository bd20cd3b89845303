"""Cheap live hints from sampled frames (run in a thread, never on the event loop)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("kuzet.webrtc")

# Face hints run on a downscaled copy: a Haar pass on 320 px wide costs a few ms.
_DETECT_WIDTH_PX = 320
# Coarse pyramid steps: a hint needs "is there a face", not its exact box (about 2x faster than 1.1).
_SCALE_STEP = 1.2


class FeedbackCode(StrEnum):
    """Live hints sent to the client as {"type": "feedback", "code": ...}. Stored values are stable."""

    OK = "ok"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    FACE_NOT_VISIBLE = "face_not_visible"
    SEVERAL_FACES = "several_faces"


@dataclass(frozen=True, slots=True)
class FeedbackLimits:
    """Thresholds from MediaSettings: mean luma 0-255 and smallest face side in full-frame pixels."""

    dark_luma: float
    bright_luma: float
    min_face_px: int


class FrameAdvisor:
    """Brightness and face-presence hints. Thread-safe: each thread gets its own Haar cascade
    (OpenCV's CascadeClassifier must not be shared between threads)."""

    def __init__(self, limits: FeedbackLimits) -> None:
        self._limits = limits
        self._local = threading.local()

    def _cascade(self) -> Any:
        if not hasattr(self._local, "cascade"):
            import cv2

            cascade = None
            # OpenCV 5 dropped the Haar cascades: then the face hint is simply not given.
            data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if data_dir is not None and hasattr(cv2, "CascadeClassifier"):
                cascade = cv2.CascadeClassifier(data_dir + "haarcascade_frontalface_default.xml")
                if cascade.empty():
                    cascade = None
            self._local.cascade = cascade
        return self._local.cascade

    def advise(self, rgb: npt.NDArray[np.uint8]) -> FeedbackCode:
        """One hint for an rgb uint8 HxWx3 frame (worst problem first)."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        luma = float(gray.mean())
        if luma < self._limits.dark_luma:
            return FeedbackCode.TOO_DARK
        if luma > self._limits.bright_luma:
            return FeedbackCode.TOO_BRIGHT
        cascade = self._cascade()
        if cascade is None:
            return FeedbackCode.OK
        scale = min(1.0, _DETECT_WIDTH_PX / gray.shape[1])
        small = (
            cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        )
        min_side = max(12, int(self._limits.min_face_px * scale))
        faces = cascade.detectMultiScale(
            cv2.equalizeHist(small), scaleFactor=_SCALE_STEP, minNeighbors=5, minSize=(min_side, min_side)
        )
        if len(faces) == 0:
            return FeedbackCode.FACE_NOT_VISIBLE
        if len(faces) > 1:
            return FeedbackCode.SEVERAL_FACES
        return FeedbackCode.OK


def sample_frame(
    frame: Any, advisor: FrameAdvisor | None
) -> tuple[npt.NDArray[np.uint8], FeedbackCode | None]:
    """Decoded av.VideoFrame -> (rgb uint8 HxWx3, live hint). Meant for asyncio.to_thread."""
    rgb: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")
    if advisor is None:
        return rgb, None
    try:
        return rgb, advisor.advise(rgb)
    except Exception:
        # A hint is a convenience: its failure must never stop the sampling itself.
        log.exception("live feedback failed")
        return rgb, None
