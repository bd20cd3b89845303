"""Synthetic presentation attacks built from real face images, for benchmarks and tests.

These are simulations, not captured attacks: they model what a camera sees when a face is shown on a
screen (moire, gamma/colour shift, bezel, reflection, resampling blur) or on paper (texture, reduced
dynamic range, perspective). All images are (H, W, 3) uint8 RGB; every function is deterministic for a
given `rng`.
"""

from __future__ import annotations

from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

ImageRgb = npt.NDArray[np.uint8]


class AttackType(StrEnum):
    """Generated attack kinds."""

    STILL_PHOTO = "still_photo"
    SCREEN_REPLAY = "screen_replay"
    PRINT = "print"


def still_photo_frames(image_rgb: ImageRgb, n_frames: int) -> list[ImageRgb]:
    """A digital still injected as video: the same image repeated `n_frames` times."""
    return [image_rgb.copy() for _ in range(n_frames)]


def _place_on_background(
    content: npt.NDArray[np.float32],
    rng: np.random.Generator,
    border_frac: float,
    background_rgb: tuple[int, ...],
) -> npt.NDArray[np.float32]:
    h, w = content.shape[:2]
    pad_y, pad_x = int(h * border_frac), int(w * border_frac)
    canvas = np.empty((h + 2 * pad_y, w + 2 * pad_x, 3), np.float32)
    canvas[:] = np.asarray(background_rgb, np.float32)
    canvas += np.asarray(rng.normal(0, 6, canvas.shape), dtype=np.float32)
    canvas[pad_y : pad_y + h, pad_x : pad_x + w] = content
    return canvas


def _recapture(img: npt.NDArray[np.float32], out_hw: tuple[int, int], rng: np.random.Generator) -> ImageRgb:
    """Camera re-capture: downscale-upscale blur, sensor noise, JPEG-like quantisation via resize back."""
    h, w = out_hw
    factor = rng.uniform(0.35, 0.6)
    small = cv2.resize(img, (max(int(w * factor), 8), max(int(h * factor), 8)), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    up = up + np.asarray(rng.normal(0, 3.0, up.shape), dtype=np.float32)
    out: ImageRgb = np.clip(up, 0, 255).astype(np.uint8)
    return out


def _perspective(
    img: npt.NDArray[np.float32], rng: np.random.Generator, max_shift: float
) -> npt.NDArray[np.float32]:
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    jitter = rng.uniform(-max_shift, max_shift, (4, 2)) * np.array([w, h])
    dst = (src + jitter).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    warped: npt.NDArray[np.float32] = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return warped


def screen_replay(image_rgb: ImageRgb, rng: np.random.Generator) -> ImageRgb:
    """Simulate the face shown on a phone/monitor screen and filmed by the check-in camera."""
    h, w = image_rgb.shape[:2]
    img = image_rgb.astype(np.float32) / 255.0
    # Display gamma and a cool white point; screens also lift blacks.
    img = np.power(img, rng.uniform(0.75, 0.9)) * np.array([0.92, 0.98, 1.08]) * rng.uniform(0.9, 1.05)
    img = 0.06 + 0.9 * np.clip(img, 0, 1)
    # Moire: beat between the pixel grid and the camera sensor, a slightly rotated fine sinusoid.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(-0.3, 0.3)
    period = rng.uniform(3.0, 6.0)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period
    img *= (1.0 + rng.uniform(0.06, 0.12) * np.sin(phase))[..., None]
    # A soft specular reflection across the glass.
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.5) * h
    sigma = rng.uniform(0.2, 0.4) * max(h, w)
    glare = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)))
    img += rng.uniform(0.1, 0.25) * glare[..., None]
    img = np.clip(img, 0, 1) * 255.0
    # Dark bezel around the screen, then a bit of room behind it.
    bezel = _place_on_background(img.astype(np.float32), rng, 0.06, (15, 15, 18))
    scene = _place_on_background(bezel, rng, 0.08, tuple(int(v) for v in rng.integers(60, 200, 3)))
    scene = _perspective(scene, rng, 0.03)
    return _recapture(scene, (h, w), rng)


def print_attack(image_rgb: ImageRgb, rng: np.random.Generator) -> ImageRgb:
    """Simulate a printed photo held up to the camera: paper texture, low dynamic range, warp."""
    h, w = image_rgb.shape[:2]
    img = image_rgb.astype(np.float32)
    # Ink on paper: black is grey, white is paper-coloured; desaturated and slightly warm.
    grey = img.mean(axis=2, keepdims=True)
    img = grey + rng.uniform(0.6, 0.85) * (img - grey)
    low, high = rng.uniform(25, 45), rng.uniform(200, 230)
    img = low + img * (high - low) / 255.0
    img *= np.array([1.03, 1.0, 0.93], np.float32)
    # Paper texture: fine grain plus low-frequency fibre blotches.
    grain = rng.normal(0, 5.0, (h, w)).astype(np.float32)
    blotch = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), max(h, w) / 40)
    blotch *= 8.0 / (np.abs(blotch).max() + 1e-6)
    img += (grain + blotch)[..., None]
    paper = _place_on_background(np.clip(img, 0, 255).astype(np.float32), rng, 0.05, (235, 232, 220))
    scene = _place_on_background(paper, rng, 0.06, tuple(int(v) for v in rng.integers(60, 200, 3)))
    scene = _perspective(scene, rng, 0.05)
    return _recapture(scene, (h, w), rng)
