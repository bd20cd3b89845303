"""A labelled face image set encoded once and cached: chip and mirror embeddings kept apart.

Layout: `ROOT/<...>/<person>/<image>`; the identity of an image is its parent directory's name (LFW).
Each image is decoded, the largest face detected with the single-image cascade (`FaceEngine.detect`,
thorough), aligned to a 150x150 chip and encoded twice: the chip and its mirror image, each L2-normalised.
Flip TTA (what `FaceSettings.flip_tta` does) is then `l2(mean(plain, mirror))`, so one encoding pass
measures both with and without TTA. Quality gates are not applied (the matcher is what is measured).

Encoding costs ~0.2-0.6 s per image on a small CPU, so results are cached in a `.npz` file keyed by the
image paths, the encoder's weights hash and the detection/alignment settings; a stale cache is ignored.
The engine (dlib) is imported only when something must be encoded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from identity.face.config import FaceSettings
from identity.face.decode import DecodedImage, decode_image
from identity.face.matching import l2_normalise
from identity.face.results import EMBEDDING_DIM

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EncodedImages:
    """Embeddings of a labelled image set: row i is image `paths[i]` of person `identities[i]`.

    `plain` and `mirror` are (n, 128) float32 L2-normalised embeddings of the chip and its mirror; rows of
    images without a detected face are NaN (`found[i]` False). `detect_ms` is per image, `encode_ms` is
    per chip (one network pass), both wall-clock milliseconds.
    """

    paths: list[str]
    identities: list[str]
    plain: F32
    mirror: F32
    found: npt.NDArray[np.bool_]
    detect_ms: npt.NDArray[np.float64]
    encode_ms: npt.NDArray[np.float64]
    key: str

    def embeddings(self, flip_tta: bool) -> F32:
        """(n, 128) L2-normalised embeddings, mirror-averaged when `flip_tta` (NaN rows where no face)."""
        if not flip_tta:
            return self.plain
        out = np.full_like(self.plain, np.nan)
        ok = self.found
        out[ok] = l2_normalise((self.plain[ok] + self.mirror[ok]) / 2.0)
        return out


def list_images(root: Path) -> list[str]:
    """Image files under `root` with a parent directory (= identity), as sorted POSIX paths relative to it."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.parent != root
    )


def identity_of(rel: str) -> str:
    """The identity label of an image path: its parent directory's name."""
    return Path(rel).parent.name


def cache_key(paths: Sequence[str], settings: FaceSettings, weights_sha256: str) -> str:
    """Hash of what the embeddings depend on: image list, encoder weights, detection and alignment."""
    spec = {
        "paths": list(paths),
        "weights": weights_sha256,
        "landmark_model": settings.landmark_model.value,
        "detect_max_side_px": settings.detect_max_side_px,
        "hog_upsample": settings.hog_upsample,
        "cnn_fallback": settings.cnn_fallback,
        "cnn_max_side_px": settings.cnn_max_side_px,
        "max_image_pixels": settings.max_image_pixels,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> EncodedImages | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return EncodedImages(
                paths=[str(p) for p in z["paths"]],
                identities=[str(p) for p in z["identities"]],
                plain=z["plain"].astype(np.float32),
                mirror=z["mirror"].astype(np.float32),
                found=z["found"].astype(bool),
                detect_ms=z["detect_ms"].astype(np.float64),
                encode_ms=z["encode_ms"].astype(np.float64),
                key=key,
            )
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(path: Path, enc: EncodedImages) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        key=np.array(enc.key),
        paths=np.array(enc.paths),
        identities=np.array(enc.identities),
        plain=enc.plain,
        mirror=enc.mirror,
        found=enc.found,
        detect_ms=enc.detect_ms,
        encode_ms=enc.encode_ms,
    )
    tmp.replace(path)


def encode_images(
    root: Path,
    paths: Sequence[str],
    settings: FaceSettings,
    models_dir: Path,
    cache: Path | None = None,
) -> tuple[EncodedImages, bool]:
    """Encode `paths` (relative to `root`); returns (embeddings, whether they came from `cache`)."""
    from identity.models import load_manifest

    weights = load_manifest()["dlib_resnet_face_v1"].sha256 or ""
    key = cache_key(paths, settings, weights)
    if cache is not None and cache.is_file():
        hit = _read_cache(cache, key)
        if hit is not None:
            return hit, True
    from identity.face.engine import FaceEngine

    # Thresholds are not used here: any calibration object will do, the shipped one may be missing.
    from identity.face.evaluate import placeholder_calibration

    engine = FaceEngine(models_dir, settings, calibration=placeholder_calibration())
    n = len(paths)
    plain = np.full((n, EMBEDDING_DIM), np.nan, dtype=np.float32)
    mirror = np.full((n, EMBEDDING_DIM), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    detect_ms = np.zeros(n)
    encode_ms = np.full(n, np.nan)
    for i, rel in enumerate(paths):
        t0 = time.perf_counter()
        try:
            decoded = decode_image((root / rel).read_bytes(), settings)
        except OSError:
            continue
        if not isinstance(decoded, DecodedImage):
            continue
        faces = engine.detect(decoded.rgb, thorough=True)
        if not faces:
            detect_ms[i] = (time.perf_counter() - t0) * 1e3
            continue
        chip = engine.chip(decoded.rgb, faces[0])
        t1 = time.perf_counter()
        pair = engine.encode_chips([chip, np.ascontiguousarray(chip[:, ::-1])], flip=False)
        t2 = time.perf_counter()
        plain[i], mirror[i] = pair[0], pair[1]
        found[i] = True
        detect_ms[i] = (t1 - t0) * 1e3
        encode_ms[i] = (t2 - t1) * 1e3 / 2
    enc = EncodedImages(
        paths=list(paths),
        identities=[identity_of(p) for p in paths],
        plain=plain,
        mirror=mirror,
        found=found,
        detect_ms=detect_ms,
        encode_ms=encode_ms,
        key=key,
    )
    if cache is not None:
        _write_cache(cache, enc)
    return enc, False
