"""Synthetic fake-camera videos for e2e tests: the astronaut (skimage, public domain) turning her head.

A flat photo cannot turn, so the head turn is a warp: the face is treated as the front half of an
ellipsoid with a nose ridge standing out of it, rotated about the vertical axis and projected back
(orthographic). The 68-point landmark yaw estimate (identity.liveness.landmarks.yaw_deg) follows it: a
20 degree warp measures about 25-30 degrees. `measure_yaw` checks that offline with face_recognition,
in a spawned process, so dlib never loads into the test process.

The loop is neutral -> left -> neutral -> right (short turns, longer neutral stretches), repeated by
Chromium's file capture.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

Rgb = npt.NDArray[np.uint8]

FRAME_W, FRAME_H = 640, 480
# A 4:3 crop of the 512x512 astronaut around her face (x0, y0, width), scaled to FRAME_W x FRAME_H:
# the face is about 230 px wide, so it stays above the face engine's minimum size even when Chromium
# halves the resolution under its bandwidth estimate.
_CROP_X0, _CROP_Y0, _CROP_W = 95, 15, 260
# Face geometry in output-frame pixels, from face_recognition's 68 landmarks of the neutral frame:
# the mid-point of the outer eye corners (x) and of the landmark box less 20 px (y); the head's
# semi-axes (1.25x the landmark box half-width, 1.6x its half-height); nose bridge top and nose tip.
_HEAD_CX, _HEAD_CY = 321.0, 270.0
_HEAD_A, _HEAD_B = 142.0, 180.0
_NOSE_X, _NOSE_TOP_Y, _NOSE_TIP_Y = 320.0, 215.0, 277.0
# How far the nose ridge stands out of the ellipsoid, as a fraction of the head's half-width, and how
# wide it is; the ellipsoid's depth as a fraction of its half-width (1 = a sphere-like head).
_NOSE_DEPTH, _NOSE_WIDTH, _HEAD_DEPTH = 0.5, 0.18, 1.0
# The warp fades out over this band of the ellipse's edge so the background stays put.
_EDGE_FADE = 0.2
_INVERSE_ITERATIONS = 4


def neutral_frame() -> Rgb:
    """The astronaut facing the camera: uint8 RGB (FRAME_H, FRAME_W, 3)."""
    from skimage import data

    img = np.asarray(data.astronaut(), dtype=np.uint8)
    h = _CROP_W * FRAME_H // FRAME_W
    crop = img[_CROP_Y0 : _CROP_Y0 + h, _CROP_X0 : _CROP_X0 + _CROP_W]
    out: Rgb = cv2.resize(crop, (FRAME_W, FRAME_H), interpolation=cv2.INTER_CUBIC)
    return out


def turned(rgb: Rgb, theta_deg: float) -> Rgb:
    """The face of `neutral_frame()` rotated by theta_deg about the vertical axis.

    Positive theta moves the nose towards image +x: the person's own left in an unmirrored camera,
    i.e. positive landmark yaw.
    """
    ys, xs = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    th = np.radians(theta_deg)
    inside = np.clip(1 - ((xs - _HEAD_CX) / _HEAD_A) ** 2 - ((ys - _HEAD_CY) / _HEAD_B) ** 2, 0, None)
    z = _HEAD_DEPTH * _HEAD_A * np.sqrt(inside)
    along = np.clip((ys - _NOSE_TOP_Y + 10) / (_NOSE_TIP_Y - _NOSE_TOP_Y + 10), 0, 1)
    below_tip = np.exp(-np.clip(ys - _NOSE_TIP_Y, 0, None) / 8.0)
    ridge = np.exp(-(((xs - _NOSE_X) / (_NOSE_WIDTH * _HEAD_A)) ** 2)) * along * below_tip
    z = z + _NOSE_DEPTH * _HEAD_A * ridge * (inside > 0)
    weight = np.clip(inside / _EDGE_FADE, 0, 1)
    # Forward map x -> x + disp(x); the backward map the remap needs is found by fixed-point iteration.
    disp = (((xs - _HEAD_CX) * (np.cos(th) - 1) + z * np.sin(th)) * weight).astype(np.float32)
    src = xs.copy()
    for _ in range(_INVERSE_ITERATIONS):
        src = xs - cv2.remap(disp, src, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out: Rgb = cv2.remap(rgb, src, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


@dataclass(frozen=True, slots=True)
class HeadTurnLoop:
    """A looping head-turn clip: neutral, left, neutral, right; segment lengths in frames at `fps`.

    The turned poses are short and the neutral ones long, so that any stretch of a second or so is
    mostly neutral (the head-turn check's baseline is a median).
    """

    fps: int = 15
    neutral_frames: int = 9
    turn_frames: int = 4
    turn_deg: float = 20.0

    @property
    def neutral_s(self) -> float:
        """Seconds of one neutral segment."""
        return self.neutral_frames / self.fps

    @property
    def turn_s(self) -> float:
        """Seconds of one turned segment."""
        return self.turn_frames / self.fps

    @property
    def period_s(self) -> float:
        """Seconds of one neutral-left-neutral-right cycle."""
        return 2 * (self.neutral_s + self.turn_s)

    def poses(self) -> dict[str, Rgb]:
        """The three distinct images of the loop: neutral, left (+turn_deg), right (-turn_deg)."""
        base = neutral_frame()
        return {"neutral": base, "left": turned(base, self.turn_deg), "right": turned(base, -self.turn_deg)}

    def frames(self) -> list[Rgb]:
        """One period of frames at `fps`."""
        poses = self.poses()
        order = [("neutral", self.neutral_frames), ("left", self.turn_frames)]
        order += [("neutral", self.neutral_frames), ("right", self.turn_frames)]
        return [poses[name] for name, count in order for _ in range(count)]


def write_y4m(frames: list[Rgb], fps: int, path: Path) -> Path:
    """RGB frames -> a yuv420p y4m file (Chromium's --use-file-for-fake-video-capture format)."""
    raw = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    h, w = frames[0].shape[:2]
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
            "-pix_fmt", "yuv420p", str(path),
        ],
        input=raw,
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return path


def thumbnail_mad(a: Rgb, b: Rgb) -> float:
    """Mean absolute difference of 32x32 grey thumbnails: what the face engine's duplicate skip compares."""

    def thumb(rgb: Rgb) -> npt.NDArray[np.float32]:
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        small: npt.NDArray[np.float32] = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA).astype(
            np.float32
        )
        return small

    return float(np.abs(thumb(a) - thumb(b)).mean())


def images_digest(images: dict[str, Rgb]) -> str:
    """sha256 over the named images, a cache key for their measurements."""
    h = hashlib.sha256()
    for name in sorted(images):
        h.update(name.encode())
        h.update(np.ascontiguousarray(images[name]).tobytes())
    return h.hexdigest()


def _yaw_in_worker(images: dict[str, Rgb], scales: tuple[float, ...]) -> dict[str, list[float | None]]:
    import face_recognition

    from identity.liveness.landmarks import landmarks_from_face_recognition, yaw_deg

    out: dict[str, list[float | None]] = {}
    for name, rgb in images.items():
        values: list[float | None] = []
        for scale in scales:
            img = (
                rgb
                if scale == 1.0
                else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            )
            locations = face_recognition.face_locations(img)
            if len(locations) != 1:
                values.append(None)
                continue
            marks = face_recognition.face_landmarks(img, locations)
            values.append(yaw_deg(landmarks_from_face_recognition(marks[0])))
        out[name] = values
    return out


def measure_yaw(
    images: dict[str, Rgb], scales: tuple[float, ...] = (1.0, 0.5)
) -> dict[str, list[float | None]]:
    """Landmark yaw (degrees) of each image at each scale; None where not exactly one face was found.

    Runs face_recognition (dlib) in a spawned process.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_yaw_in_worker, images, scales).result(timeout=180)
