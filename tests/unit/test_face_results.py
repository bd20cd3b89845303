"""Templates, calibration, scoring and evaluation metrics (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest

from identity.checks import ModelStamp, Outcome
from identity.face.calibration import build_calibration, load_calibration, threshold_at_fmr
from identity.face.evaluate import accuracy_2fold, eer, summarise, tar_at_far
from identity.face.matching import decide, distance_to_template, l2_normalise
from identity.face.results import Template, TemplateError, template_from_bytes, template_to_bytes

STAMP = ModelStamp(name="dlib_resnet_face_v1", version="1.0", weights_sha256="ab" * 32)


def _template(n: int = 3) -> Template:
    rng = np.random.default_rng(0)
    return Template(
        embeddings=l2_normalise(rng.normal(size=(n, 128))),
        model=STAMP,
        created_at=Template.now(),
        metadata={"n_used": n},
    )


def test_template_round_trip() -> None:
    t = _template()
    back = template_from_bytes(template_to_bytes(t))
    assert np.array_equal(back.embeddings, t.embeddings)
    assert back.model == STAMP and back.metadata == {"n_used": 3} and back.created_at == t.created_at


@pytest.mark.parametrize("cut", [0, 5, 20, -4])
def test_corrupt_template_is_rejected(cut: int) -> None:
    raw = template_to_bytes(_template())
    with pytest.raises(TemplateError):
        template_from_bytes(raw[:cut])


def test_template_with_nan_is_rejected() -> None:
    raw = bytearray(template_to_bytes(_template(1)))
    raw[-4:] = np.array([np.nan], dtype="<f4").tobytes()
    with pytest.raises(TemplateError):
        template_from_bytes(bytes(raw))


def test_threshold_at_fmr_uses_kth_closest_impostor() -> None:
    imp = np.linspace(0.3, 1.3, 100)
    assert threshold_at_fmr(imp, 0.001) == pytest.approx(0.3)  # 100 impostors: FAR 0.1% accepts none
    assert threshold_at_fmr(imp, 0.01) == pytest.approx(imp[1])  # FAR 1% accepts exactly one


def test_metrics_on_separable_scores() -> None:
    same = np.array([True] * 50 + [False] * 50)
    d = np.concatenate([np.linspace(0.02, 0.2, 50), np.linspace(0.3, 0.9, 50)])
    m = summarise(d, same)
    assert m["accuracy_2fold"] == 1.0 and m["eer"] == 0.0
    assert m["tar_at_far_1%"] == 1.0 and m["tar_at_far_0.1%"] == 1.0
    assert accuracy_2fold(d, same)[0] == 1.0


def test_metrics_with_overlap() -> None:
    same = np.array([True] * 4 + [False] * 4)
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.25, 0.5, 0.7, 0.8])
    tar, t = tar_at_far(d, same, 0.001)
    assert t == 0.25 and tar == 0.5
    assert 0.0 < eer(d, same) < 0.5


def test_calibration_table_and_decisions() -> None:
    rng = np.random.default_rng(1)
    gen = rng.uniform(0.02, 0.12, 500)
    imp = rng.uniform(0.15, 0.6, 20000)
    cal = build_calibration(gen, imp, dataset="synthetic", scoring={}, model=STAMP.to_dict())
    th = cal.thresholds(1e-3, 0.01)
    assert th.pass_below == pytest.approx(np.sort(imp)[20]) and not th.clamped
    assert th.fail_above >= th.pass_below
    assert cal.thresholds(1e-6, 0.01).clamped
    probe = _template(1)
    assert decide(0.01, th, STAMP).outcome is Outcome.PASS
    assert decide(0.9, th, STAMP).outcome is Outcome.FAIL
    borderline = decide((th.pass_below + th.fail_above) / 2 + 1e-9, th, STAMP)
    assert borderline.outcome in (Outcome.INCONCLUSIVE, Outcome.FAIL, Outcome.PASS)
    assert distance_to_template(probe.embeddings, probe.embeddings[0]) == pytest.approx(0.0, abs=1e-6)


def test_shipped_calibration_has_provenance() -> None:
    cal = load_calibration()
    # made on the LFW dev images under ../shared/data/faces, every pair, with its provenance
    assert cal.n_impostor >= 1000 and cal.n_genuine >= 100 and cal.date and "faces/" in cal.dataset
    assert cal.model["name"] == "dlib_resnet_face_v1"
    th = cal.thresholds(1e-3, 0.01)
    assert 0.0 < th.pass_below < th.fail_above < 1.0
