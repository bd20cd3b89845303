"""Score calibration: target false-match rate -> distance threshold, measured on data (light: numpy only).

The table is produced by `kuzet eval face --cross-validate --write-calibration PATH` from every
cross-identity and same-identity pair of a labelled image set, and saved as JSON with the dataset name,
pair counts, date, the scoring it was measured under, the safety margins chosen by identity-grouped
cross-validation (with the out-of-sample figures) and short hashes of the images it was made on (so an
evaluation can tell whether it overlaps them). A threshold is only as fine as the data: an FMR below
1/n_impostor cannot be resolved, so a target below the table's smallest measured FMR is clamped (and says so).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_PATH = Path(__file__).with_name("calibration.json")
FMR_GRID = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)
FALSE_FAIL_GRID = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 1e-4)


class CalibrationError(ValueError):
    """The calibration file is missing, malformed or measured for another model."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Decision thresholds in cosine distance: PASS when d < pass_below; FAIL when d > fail_above."""

    pass_below: float
    fail_above: float
    target_fmr: float
    effective_fmr: float
    target_false_fail_rate: float
    clamped: bool


@dataclass(frozen=True, slots=True)
class Calibration:
    """FMR and false-fail tables in cosine distance, with provenance."""

    dataset: str
    n_genuine: int
    n_impostor: int
    date: str
    scoring: dict[str, Any]
    model: dict[str, str]
    fmr_table: list[tuple[float, float]]
    false_fail_table: list[tuple[float, float]]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    pass_margin: float = 0.0
    fail_margin: float = 0.0

    def thresholds(self, target_fmr: float, target_false_fail_rate: float) -> Thresholds:
        """PASS/FAIL thresholds for the targets: the largest tabulated FMR <= target (conservative).

        The safety margins (cosine distance, chosen by identity-grouped cross-validation, see
        identity.face.crossval) move PASS down and FAIL up: pass_below = table - pass_margin,
        fail_above = table + fail_margin.
        """
        rows = sorted(self.fmr_table, reverse=True)
        usable = [row for row in rows if row[0] <= target_fmr]
        clamped = not usable
        fmr, pass_below = usable[0] if usable else rows[-1]
        ff_rows = sorted(self.false_fail_table, reverse=True)
        ff_usable = [row for row in ff_rows if row[0] <= target_false_fail_rate]
        _, fail_above = ff_usable[0] if ff_usable else ff_rows[-1]
        pass_below -= self.pass_margin
        fail_above += self.fail_margin
        return Thresholds(
            pass_below=pass_below,
            fail_above=max(fail_above, pass_below),
            target_fmr=target_fmr,
            effective_fmr=fmr,
            target_false_fail_rate=target_false_fail_rate,
            clamped=clamped,
        )

    def to_json(self) -> str:
        """Pretty JSON text of the whole calibration."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        """Parse JSON text written by `to_json`."""
        try:
            raw = json.loads(text)
            return cls(
                dataset=str(raw["dataset"]),
                n_genuine=int(raw["n_genuine"]),
                n_impostor=int(raw["n_impostor"]),
                date=str(raw["date"]),
                scoring=dict(raw["scoring"]),
                model=dict(raw["model"]),
                fmr_table=[(float(a), float(b)) for a, b in raw["fmr_table"]],
                false_fail_table=[(float(a), float(b)) for a, b in raw["false_fail_table"]],
                notes=str(raw.get("notes", "")),
                extra=dict(raw.get("extra", {})),
                pass_margin=float(raw.get("pass_margin", 0.0)),
                fail_margin=float(raw.get("fail_margin", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"bad calibration JSON: {exc}") from exc


def load_calibration(path: Path | None = None) -> Calibration:
    """Read a calibration file (default: identity/face/calibration.json)."""
    target = path or DEFAULT_PATH
    if not target.is_file():
        raise CalibrationError(
            f"calibration file missing: {target} (run `kuzet eval face --write-calibration`)"
        )
    cal = Calibration.from_json(target.read_text())
    if not cal.fmr_table or not cal.false_fail_table:
        raise CalibrationError(f"calibration {target} has empty tables")
    return cal


def threshold_at_fmr(impostor: npt.NDArray[np.float64], fmr: float) -> float:
    """Distance threshold t with `d < t` accepting exactly k = floor(fmr * n) impostors (ties aside).

    t is the (k+1)-th smallest impostor distance, i.e. the k-th highest impostor similarity counted from
    zero: with 100 impostors, FMR 1% accepts 1 and FMR 0.1% accepts none (t = the closest impostor).
    """
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    k = int(np.floor(fmr * imp.size + 1e-9))
    return float(imp[min(k, imp.size - 1)])


def build_calibration(
    genuine: npt.NDArray[np.float64],
    impostor: npt.NDArray[np.float64],
    *,
    dataset: str,
    scoring: dict[str, Any],
    model: dict[str, str],
    notes: str = "",
    pass_margin: float = 0.0,
    fail_margin: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> Calibration:
    """Tabulate FMR and false-fail thresholds from genuine and impostor cosine distances."""
    imp = np.asarray(impostor, dtype=np.float64)
    gen = np.sort(np.asarray(genuine, dtype=np.float64))
    if imp.size == 0 or gen.size == 0:
        raise CalibrationError("calibration needs both genuine and impostor pairs")
    fmr_table = [(f, threshold_at_fmr(imp, f)) for f in FMR_GRID if f * imp.size >= 1.0 or f == FMR_GRID[0]]
    # Smallest resolvable FMR: no impostor accepted at all.
    fmr_table.append((1.0 / imp.size, float(imp.min())))
    fmr_table = sorted(set(fmr_table), reverse=True)
    # FAIL threshold: the genuine distance exceeded by at most `rate` of genuine pairs.
    ff_table = []
    for rate in FALSE_FAIL_GRID:
        if rate * gen.size < 1.0:
            continue
        idx = min(int(np.ceil((1.0 - rate) * gen.size)) - 1, gen.size - 1)
        ff_table.append((rate, float(gen[max(idx, 0)])))
    ff_table.append((1.0 / gen.size, float(gen.max())))
    ff_table = sorted(set(ff_table), reverse=True)
    return Calibration(
        dataset=dataset,
        n_genuine=int(gen.size),
        n_impostor=int(imp.size),
        date=datetime.now(UTC).date().isoformat(),
        scoring=scoring,
        model=model,
        fmr_table=fmr_table,
        false_fail_table=ff_table,
        notes=notes,
        extra=dict(extra or {}),
        pass_margin=pass_margin,
        fail_margin=fail_margin,
    )
