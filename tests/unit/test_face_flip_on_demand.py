"""On-demand flip TTA: a probe far from the decision band is encoded once; near it, mirror-averaged exactly as
always-mirror would have been; and the cross-validated measurement that justifies the default margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from identity.face.config import FaceSettings
from identity.face.crossval import (
    cross_validate,
    cross_validate_on_demand_flip,
    flip_band_margin,
    flip_pass_margin,
    on_demand_decisions,
)
from identity.face.decode import DecodedImage, decode_image
from identity.face.engine import FaceEngine
from identity.face.results import Template
from sobriety.face_port import EngineFacePort

REPO = Path(__file__).resolve().parents[2]
LFW = REPO / ".." / "shared" / "data" / "faces" / "lfw-dev"
MODELS = REPO / "var" / "models"


class CountingEngine(FaceEngine):
    """The real engine, counting network passes (chips through the ResNet)."""

    passes = 0

    def encode_chips(self, chips, num_jitters=0, flip=True):  # type: ignore[no-untyped-def]
        self.passes += len(chips) * (2 if flip and num_jitters == 0 else 1)
        return super().encode_chips(chips, num_jitters, flip)


@pytest.fixture(scope="module")
def engine() -> CountingEngine:
    return CountingEngine(MODELS, FaceSettings())


def _lfw(person: str, n: int) -> np.ndarray:
    path = sorted((LFW / person).glob("*.jpg"))[n]
    decoded = decode_image(path.read_bytes(), FaceSettings())
    assert isinstance(decoded, DecodedImage)
    return decoded.rgb


def _template(engine: FaceEngine, images: list[np.ndarray]) -> Template:
    template, results = engine.enrol(images)
    assert template is not None, [r.code for r in results]
    return template


def test_mirror_added_on_demand_equals_always_mirroring(engine: CountingEngine) -> None:
    image = _lfw("Hugo_Chavez", 1)
    full = engine.analyse(image).embedding
    probe = engine.analyse_probe(image)
    assert probe.mirrored is False and probe.chip is not None
    one_pass = probe.analysis.embedding
    assert one_pass is not None and full is not None
    engine.add_mirror(probe)
    assert probe.mirrored and probe.analysis.embedding is not None
    np.testing.assert_allclose(probe.analysis.embedding, full, atol=1e-6)
    assert float(np.dot(one_pass, full)) < 1.0 - 1e-6  # the mirror really changed the embedding


def test_clear_match_and_clear_mismatch_take_one_pass(engine: CountingEngine) -> None:
    template = _template(engine, [_lfw("Hugo_Chavez", n) for n in (0, 2, 3)])
    clear = ((_lfw("Hugo_Chavez", 5), "match"), (np.ascontiguousarray(data.astronaut()), "mismatch"))
    for image, expected in clear:
        before = engine.passes
        result = engine.verify_image(template, image)
        assert result.code == expected, result
        assert result.details["mirror_pass"] is False
        assert engine.passes - before == 1  # one network pass, not two


def test_probe_near_the_band_gets_the_mirror(engine: CountingEngine) -> None:
    template = _template(engine, [_lfw("Hugo_Chavez", n) for n in (0, 2, 3)])
    image = _lfw("Hugo_Chavez", 4)
    d = engine.verify_image(template, image).score
    assert d is not None
    # Thresholds placed around this probe's distance: now it is in the band and must be mirrored.
    probe = engine.analyse_probe(image)
    assert engine.needs_mirror(probe, d, d - 0.001, d + 0.001)
    assert not engine.needs_mirror(probe, d, d + 0.05, d + 0.1)
    off = FaceEngine(MODELS, FaceSettings(flip_tta_on_demand=False), calibration=engine.calibration)
    assert off.analyse_probe(image).mirrored  # always-mirror when on-demand is off


def test_breath_port_mirrors_only_near_its_band(engine: CountingEngine) -> None:
    template = _template(engine, [_lfw("Hugo_Chavez", n) for n in (0, 2, 3)])
    gallery = list(template.embeddings.astype(np.float64))
    image = _lfw("Hugo_Chavez", 4)
    far = EngineFacePort(engine, band=(0.9, 1.0))
    faces = far.analyse(image)
    d_far = far.distance(gallery, image, faces[0])
    assert far.mirrored is False
    near = EngineFacePort(engine, band=(d_far - 0.001, d_far + 0.001))
    d_near = near.distance(gallery, image, near.analyse(image)[0])
    assert near.mirrored is True and abs(d_near - d_far) > 0
    always = EngineFacePort(engine)
    img = _lfw("Hugo_Chavez", 5)
    always.distance(gallery, img, always.analyse(img)[0])
    assert always.mirrored is True


def test_on_demand_decisions_use_the_mirror_only_inside_the_band() -> None:
    single = np.array([0.01, 0.06, 0.07, 0.09, 0.3])
    refined = single + 0.005
    d, need = on_demand_decisions(single, refined, 0.066, 0.088, 0.01)
    assert need.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(d, [0.01, 0.065, 0.075, 0.095, 0.3])


def test_on_demand_cross_validation_agrees_with_full_flip_on_synthetic_identities() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 128))
    ids, plain, mirror = [], [], []
    for k, c in enumerate(centres):
        for _ in range(3):
            base = c + rng.normal(scale=1.0, size=128)
            for out, jitter in ((plain, 0.3), (mirror, 0.3)):
                v = base + rng.normal(scale=jitter, size=128)
                out.append(v / np.linalg.norm(v))
            ids.append(f"p{k}")
    plain_a, mirror_a = np.array(plain), np.array(mirror)
    both = plain_a + mirror_a
    flip = both / np.linalg.norm(both, axis=1, keepdims=True)
    cv = cross_validate(flip, ids, k=4, repeats=1)
    report = cross_validate_on_demand_flip(plain_a, mirror_a, ids, cv, quantile=1.0, shipped=(2.0, 2.0))
    assert report["n_genuine"] > 0 and report["n_impostor"] > 0
    assert 0.0 < report["mirror_pass_share"] < 1.0
    if report["decisions_differing_from_flip"] == 0:  # same decisions -> same rates
        assert report["rates"]["on_demand"] == report["rates"]["flip"]
    assert report["mirror_pass_share_genuine"] >= report["mirror_pass_share_impostor"]
    # A rise is at most the gap: the PASS-side margin never exceeds the symmetric one, so the mirror runs
    # no more often than under the symmetric rule.
    assert report["pass_margin"]["max"] <= report["margin"]["max"]
    assert report["mirror_pass_share"] <= report["symmetric"]["mirror_pass_share"]
    # Margins that cover every distance: every probe mirrored, every decision that of full flip.
    assert report["shipped"]["mirror_pass_share"] == 1.0
    assert report["shipped"]["decisions_differing_from_flip"] == 0


def test_pass_side_margin_only_widens_the_band_below_pass() -> None:
    single = np.array([0.045, 0.052, 0.06, 0.09, 0.105])
    refined = single - 0.004
    # PASS 0.061, FAIL 0.088: 0.0125 below PASS, 0.02 above FAIL.
    d, need = on_demand_decisions(single, refined, 0.061, 0.088, 0.02, pass_margin=0.0125)
    assert need.tolist() == [False, True, True, True, True]
    np.testing.assert_allclose(d, [0.045, 0.048, 0.056, 0.086, 0.101])
    _, symmetric = on_demand_decisions(single, refined, 0.061, 0.088, 0.02)
    assert symmetric.tolist() == [True, True, True, True, True]


def test_flip_pass_margin_counts_only_rises() -> None:
    single = np.array([0.05, 0.06, 0.07, 0.08, np.inf])
    lowered = single - np.array([0.01, 0.02, 0.005, 0.015, 0.0])
    assert flip_pass_margin(lowered, single, quantile=1.0) == 0.0  # the mirror never raised a distance
    raised = lowered.copy()
    raised[2] = single[2] + 0.003
    assert flip_pass_margin(raised, single, quantile=1.0) == pytest.approx(0.003)
    assert flip_band_margin(raised, single, quantile=1.0) == pytest.approx(0.02)


def test_template_mirror_uses_the_pass_margin_below_pass_and_the_band_margin_above_fail(
    engine: CountingEngine,
) -> None:
    probe = engine.analyse_probe(_lfw("Hugo_Chavez", 4))
    s, t = engine.settings, engine.thresholds
    assert s.flip_tta_pass_margin < s.flip_tta_margin
    below = t.pass_below - (s.flip_tta_pass_margin + s.flip_tta_margin) / 2  # inside 0.02, outside 0.0125
    assert engine.needs_mirror(probe, below, t.pass_below, t.fail_above)
    assert not engine.needs_template_mirror(probe, below)
    assert engine.needs_template_mirror(probe, t.pass_below - 0.9 * s.flip_tta_pass_margin)
    assert engine.needs_template_mirror(probe, t.fail_above + 0.9 * s.flip_tta_margin)
    assert not engine.needs_template_mirror(probe, t.fail_above + 1.1 * s.flip_tta_margin)
