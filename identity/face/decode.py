"""Safe image decoding with Pillow: light enough for the API process (never imports face_recognition).

Every failure is a TECHNICAL `CheckResult` (the upload is unusable; offer a retake), never an exception.
The pixel limit is checked from the header, before any pixel is decoded, so a 20000x20000 header costs
nothing. Colour order of the result is RGB, dtype uint8, shape (H, W, 3).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from identity.checks import CheckKind, CheckResult, Outcome
from identity.face.config import FaceSettings

RgbImage = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded upload: `rgb` is uint8 (H, W, 3); `source_mode` is Pillow's mode before conversion."""

    rgb: RgbImage
    source_format: str
    source_mode: str


def _technical(code: str, message: str, **details: object) -> CheckResult:
    return CheckResult(
        kind=CheckKind.MEDIA, outcome=Outcome.TECHNICAL, code=code, message=message, details=dict(details)
    )


def decode_image(data: bytes, settings: FaceSettings) -> DecodedImage | CheckResult:
    """Decode encoded image bytes to RGB uint8 (H, W, 3), or a TECHNICAL CheckResult saying why not."""
    if not data:
        return _technical("empty_image", "The image is empty. Please take the photo again.")
    if len(data) > settings.max_image_bytes:
        return _technical(
            "image_too_large",
            "The image file is too large. Please send a smaller photo.",
            bytes=len(data),
            limit_bytes=settings.max_image_bytes,
        )
    try:
        with warnings.catch_warnings():
            # Our own limit (below) is the one that counts; Pillow's warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    return _technical("image_unreadable", "The image has no pixels. Please try again.")
                if width * height > settings.max_image_pixels:
                    return _technical(
                        "image_too_large",
                        "The image has too many pixels. Please send a normal camera photo.",
                        width=width,
                        height=height,
                        limit_pixels=settings.max_image_pixels,
                    )
                fmt = img.format or "unknown"
                mode = img.mode
                img.load()
                # In place: without an orientation tag Pillow would return a full copy of the pixels
                # (~20 ms for a 12 MP photo).
                ImageOps.exif_transpose(img, in_place=True)
                rgb = _to_rgb(img)
    except Image.DecompressionBombError as exc:
        return _technical(
            "image_too_large",
            "The image has too many pixels. Please send a normal camera photo.",
            error=str(exc),
        )
    except UnidentifiedImageError:
        return _technical(
            "image_unreadable", "The file is not an image we can read. Please take the photo again."
        )
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated JPEG/PNG ("image file is truncated"), corrupt chunks, bad headers.
        return _technical(
            "image_corrupt",
            "The image arrived damaged or incomplete. Please take the photo again.",
            error=str(exc)[:200],
        )
    return DecodedImage(rgb=rgb, source_format=fmt, source_mode=mode)


def _to_rgb(img: Image.Image) -> RgbImage:
    """Flatten alpha onto white and convert any mode (L, P, I;16, CMYK, RGBA) to RGB uint8."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grey: rescale to 0..255 rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        img = Image.fromarray(scaled.astype(np.uint8), mode="L")
    # An RGB image is read as it is: convert("RGB") would only copy it.
    out = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(out)
