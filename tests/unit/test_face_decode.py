"""Safe decoding: every bad upload is a TECHNICAL CheckResult, never an exception."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data

from identity.checks import CheckResult, Outcome
from identity.face.config import FaceSettings
from identity.face.decode import DecodedImage, decode_image

SETTINGS = FaceSettings()
REPO = Path(__file__).resolve().parents[2]


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB but which carries one tiny IDAT (a bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_garbage_bytes_are_technical() -> None:
    result = decode_image(b"this is not an image at all" * 10, SETTINGS)
    assert isinstance(result, CheckResult)
    assert result.outcome is Outcome.TECHNICAL
    assert result.code == "image_unreadable"


def test_empty_upload_is_technical() -> None:
    result = decode_image(b"", SETTINGS)
    assert isinstance(result, CheckResult) and result.code == "empty_image"


def test_truncated_jpeg_is_technical() -> None:
    jpeg = _encode(Image.fromarray(data.astronaut()), "JPEG")
    result = decode_image(jpeg[: len(jpeg) // 2], SETTINGS)
    assert isinstance(result, CheckResult)
    assert result.outcome is Outcome.TECHNICAL
    assert result.code == "image_corrupt"
    assert "again" in result.message


def test_huge_dimensions_header_is_refused_before_decoding() -> None:
    # 20000x20000 trips Pillow's own bomb guard inside Image.open; 12000x12000 is ours to refuse.
    bomb = decode_image(_png_header_only(20000, 20000), SETTINGS)
    assert isinstance(bomb, CheckResult) and bomb.code == "image_too_large"
    assert bomb.outcome is Outcome.TECHNICAL
    result = decode_image(_png_header_only(12000, 12000), SETTINGS)
    assert isinstance(result, CheckResult) and result.code == "image_too_large"
    assert result.details["width"] == 12000 and result.details["limit_pixels"] == SETTINGS.max_image_pixels


def test_beyond_pillow_bomb_limit_is_refused() -> None:
    # Far beyond Pillow's own DecompressionBombError threshold even with a permissive setting.
    permissive = FaceSettings(max_image_pixels=200_000_000)
    result = decode_image(_png_header_only(60000, 60000), permissive)
    assert isinstance(result, CheckResult) and result.code == "image_too_large"


def test_greyscale_becomes_rgb() -> None:
    grey = Image.fromarray(data.camera())
    result = decode_image(_encode(grey), SETTINGS)
    assert isinstance(result, DecodedImage)
    assert result.rgb.shape == (*data.camera().shape, 3) and result.rgb.dtype == np.uint8
    assert result.source_mode == "L"
    assert np.array_equal(result.rgb[..., 0], result.rgb[..., 2])


def test_rgba_is_flattened_to_rgb() -> None:
    rgba = np.dstack([data.astronaut(), np.full((512, 512), 128, np.uint8)])
    result = decode_image(_encode(Image.fromarray(rgba, mode="RGBA")), SETTINGS)
    assert isinstance(result, DecodedImage)
    assert result.rgb.shape == (512, 512, 3) and result.source_mode == "RGBA"


def test_sixteen_bit_grey_is_rescaled() -> None:
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    result = decode_image(_encode(Image.fromarray(arr)), SETTINGS)
    assert isinstance(result, DecodedImage)
    assert result.rgb.max() == 255 and result.rgb.min() == 0


def test_oversized_file_is_refused() -> None:
    small = FaceSettings(max_image_bytes=1024)
    result = decode_image(_encode(Image.fromarray(data.astronaut()), "JPEG"), small)
    assert isinstance(result, CheckResult) and result.code == "image_too_large"


def test_decoding_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; import identity.face.decode, identity.face.worker, identity.face.results, "
        "identity.face.quality, identity.face.calibration, identity.face.matching; "
        "bad = [m for m in ('face_recognition', 'dlib', 'torch', 'cv2') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exif_orientation_is_applied_and_pixels_match_pillows_copying_path() -> None:
    # decode_image transposes in place and skips convert("RGB") on RGB images: the pixels must be exactly
    # those of Pillow's copying exif_transpose + convert, with and without an orientation tag.
    rgb = np.ascontiguousarray(data.astronaut()[:300, :200])
    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90, exif=exif.tobytes())
        result = decode_image(buf.getvalue(), SETTINGS)
        assert isinstance(result, DecodedImage)
        with Image.open(io.BytesIO(buf.getvalue())) as img:
            expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        assert result.rgb.shape == ((200, 300, 3) if orientation in (6, 8) else (300, 200, 3))
        assert np.array_equal(result.rgb, expected), orientation
        assert result.rgb.flags.c_contiguous and result.source_mode == "RGB"
