"""Alcohol unit conversions and the partition ratio."""

from __future__ import annotations

import itertools

import pytest

from sobriety.config import SobrietySettings
from sobriety.units import AlcoholUnit, convert


@pytest.mark.parametrize("ratio", [2000.0, 2100.0, 2300.0])
def test_round_trip_every_pair(ratio: float) -> None:
    for src, dst in itertools.product(AlcoholUnit, AlcoholUnit):
        for v in (0.0, 0.02, 0.08, 0.25, 1.3):
            assert convert(convert(v, src, dst, ratio), dst, src, ratio) == pytest.approx(v, abs=1e-12)


def test_known_values() -> None:
    # Breath to breath needs no ratio: 0.08 g per 210 L = 0.381 mg/L.
    assert convert(0.08, AlcoholUnit.G_210L, AlcoholUnit.MG_L, 1800.0) == pytest.approx(0.38095, abs=1e-5)
    # 2100:1 defines g/210L: a breath figure equals the g/100mL blood figure.
    assert convert(0.08, AlcoholUnit.G_210L, AlcoholUnit.G_100ML, 2100.0) == pytest.approx(0.08)
    # 0.25 mg/L breath is 0.5 permille at 2000:1 (the German/Austrian pairing), 0.525 at 2100:1.
    assert convert(0.25, AlcoholUnit.MG_L, AlcoholUnit.PERMILLE, 2000.0) == pytest.approx(0.5)
    assert convert(0.25, AlcoholUnit.MG_L, AlcoholUnit.PERMILLE, 2100.0) == pytest.approx(0.525)
    assert convert(0.05, AlcoholUnit.G_100ML, AlcoholUnit.PERMILLE, 2100.0) == pytest.approx(0.5)


def test_breath_units_and_ratio_bounds() -> None:
    assert AlcoholUnit.G_210L.is_breath and AlcoholUnit.MG_L.is_breath
    assert not AlcoholUnit.PERMILLE.is_breath and not AlcoholUnit.G_100ML.is_breath
    assert SobrietySettings().partition_ratio == 2100.0
    with pytest.raises(ValueError):
        SobrietySettings(partition_ratio=1000.0)
    with pytest.raises(ValueError):
        SobrietySettings(deprivation_s=600)  # the deprivation period is bounded to 15-20 minutes
