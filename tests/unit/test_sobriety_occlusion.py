"""Synthetic mouthpiece occlusion and the visibility heuristic, on real LFW photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.geometry import FaceBox
from sobriety.occlusion import lips_region, mouth_region, mouthpiece_fraction, occlude_mouth

LFW = Path(__file__).parents[2] / ".." / "shared" / "data" / "faces" / "lfw-dev"
# Deep-funneled LFW images are 250x250 with the face centred; this is roughly dlib's HOG box there.
BOX = FaceBox(left=70, top=75, right=180, bottom=185)


def lfw(n: int) -> list[np.ndarray]:
    paths = sorted(LFW.glob("*/*_0001.jpg"))[:n]
    assert len(paths) == n
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_occlusion_changes_the_mouth_region_only(seed: int) -> None:
    for rgb in lfw(5):
        out, region = occlude_mouth(rgb, BOX, None, np.random.default_rng(seed))
        assert out.shape == rgb.shape and out.dtype == np.uint8
        changed = np.any(out != rgb, axis=2)
        inside = region.mask(rgb.shape)
        assert changed.any()
        assert not (changed & ~inside).any(), "pixels changed outside the mouth region"
        # The region is the lower face, below the eyes.
        assert (
            region.y0 > BOX.top + 0.5 * BOX.height
            and region.x0 >= BOX.left - 5
            and region.x1 <= BOX.right + 5
        )
        # The lips themselves are covered.
        lips = lips_region(BOX, None, rgb.shape)
        covered = changed[lips.y0 : lips.y1, lips.x0 : lips.x1].mean()
        assert covered > 0.5


def test_landmarks_drive_the_region() -> None:
    rgb = lfw(1)[0]
    pts = np.zeros((68, 2))
    pts[:, 0], pts[:, 1] = 125.0, 120.0
    pts[48], pts[54] = (110.0, 160.0), (140.0, 160.0)  # mouth corners
    pts[48:68, 1] = 160.0
    pts[33] = (125.0, 140.0)  # nose base
    pts[8] = (125.0, 190.0)  # chin
    region = mouth_region(BOX, pts, rgb.shape)
    assert region.y0 > 140 and region.y1 > 190 and region.x0 < 110 and region.x1 > 140
    out, r2 = occlude_mouth(rgb, BOX, pts, np.random.default_rng(3))
    assert r2 == region
    assert not (np.any(out != rgb, axis=2) & ~region.mask(rgb.shape)).any()


def test_heuristic_scores_occluded_faces_higher() -> None:
    images = lfw(12)
    bare = [mouthpiece_fraction(im, BOX, None, 2.5) for im in images]
    occ = [
        mouthpiece_fraction(occlude_mouth(im, BOX, None, np.random.default_rng(i))[0], BOX, None, 2.5)
        for i, im in enumerate(images)
    ]
    assert all(0.0 <= v <= 1.0 for v in bare + occ)
    assert np.median(occ) > np.median(bare) + 0.15
    assert sum(o > b for o, b in zip(occ, bare, strict=True)) >= 10
    assert np.isnan(mouthpiece_fraction(images[0], FaceBox(0, 0, 3, 3), None, 2.5))
