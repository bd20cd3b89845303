"""Alcohol concentration units and conversions between them.

Breath units measure ethanol in exhaled air; blood units in blood. Converting breath to blood needs the
blood/breath partition ratio R: one volume of blood holds the ethanol of R volumes of alveolar air.

Conversions used (R = `SobrietySettings.partition_ratio`, default 2100):

* g/210L (breath) -> mg/L (breath): x g per 210 L = x * 1000 / 210 mg/L. No ratio involved.
* mg/L (breath) -> per mille (blood, g/L): BAC = BrAC * R / 1000, so 0.25 mg/L -> 0.525 permille at 2100:1
  (0.5 permille at 2000:1, the ratio behind Germany's and Austria's 0.25 mg/L = 0.5 permille pairing).
* g/100mL (blood) -> per mille (blood): x g/100 mL = 10x g/L.

With R = 2100 a g/210L breath reading equals the g/100mL blood figure by construction: that is how the US
unit was defined (Uniform Vehicle Code; NHTSA). We use one ratio everywhere so a limit in any unit means
the same thing. 2100:1 underestimates blood alcohol for most people (measured in vivo mean about 2300:1,
Jones & Andersson, "Variability of the blood/breath alcohol ratio in drinking drivers", J Forensic Sci
1996;41(6):916-921), so it errs in the person's favour. "Per mille" here is grams per litre of blood
(mass/volume, as in most of Europe and the CIS), not grams per kilogram.
"""

from __future__ import annotations

from enum import StrEnum


class AlcoholUnit(StrEnum):
    """A unit an alcohol concentration is stated in. Stored values are stable."""

    G_210L = "g/210L"  # breath: grams of ethanol per 210 litres of breath
    MG_L = "mg/L"  # breath: milligrams of ethanol per litre of breath
    G_100ML = "g/100mL"  # blood: grams per 100 millilitres (US "BAC %")
    PERMILLE = "permille"  # blood: grams per litre (per mille)

    @property
    def is_breath(self) -> bool:
        """True for breath units (what a breathalyser reports)."""
        return self in (AlcoholUnit.G_210L, AlcoholUnit.MG_L)


_LITRES_PER_210L = 210.0


def to_mg_per_l_breath(value: float, unit: AlcoholUnit, partition_ratio: float) -> float:
    """Convert a concentration in `unit` to breath mg/L (the internal pivot unit).

    `partition_ratio` is blood/breath (e.g. 2100.0); it is only used for blood units.
    """
    if unit is AlcoholUnit.MG_L:
        return value
    if unit is AlcoholUnit.G_210L:
        return value * 1000.0 / _LITRES_PER_210L
    if unit is AlcoholUnit.PERMILLE:
        return value * 1000.0 / partition_ratio
    if unit is AlcoholUnit.G_100ML:
        return value * 10.0 * 1000.0 / partition_ratio
    raise ValueError(f"unknown unit {unit!r}")


def from_mg_per_l_breath(value_mg_l: float, unit: AlcoholUnit, partition_ratio: float) -> float:
    """Convert breath mg/L to `unit` (inverse of `to_mg_per_l_breath`)."""
    if unit is AlcoholUnit.MG_L:
        return value_mg_l
    if unit is AlcoholUnit.G_210L:
        return value_mg_l * _LITRES_PER_210L / 1000.0
    if unit is AlcoholUnit.PERMILLE:
        return value_mg_l * partition_ratio / 1000.0
    if unit is AlcoholUnit.G_100ML:
        return value_mg_l * partition_ratio / 1000.0 / 10.0
    raise ValueError(f"unknown unit {unit!r}")


def convert(value: float, src: AlcoholUnit, dst: AlcoholUnit, partition_ratio: float) -> float:
    """Convert a concentration from `src` to `dst` units with the given blood/breath partition ratio."""
    if src is dst:
        return value
    return from_mg_per_l_breath(to_mg_per_l_breath(value, src, partition_ratio), dst, partition_ratio)
