"""False violations from GNSS jitter and time to detect a real entry, on SYNTHETIC tracks (issue #17).

    .venv/bin/python benchmarks/location_jitter.py [--hours 168] [--period-s 10] [--seed 1]

No field GNSS tracks are available here, so this measures the jitter rule (media_server.location.zones with
the `LocationSettings` defaults) on a documented noise model, not on real devices; use it to compare rules
and settings, and re-measure on your own trackers' tracks before trusting the absolute figures.

Noise model per fix (period `--period-s`): a horizontal error that is an AR(1) process per axis (standard
deviation `sigma_m` drawn per run from 4-12 m, correlation time 120 s, as GNSS errors drift rather than
jump), the accuracy the device reports = 2 x sigma (a ~86 % circle) x a factor in [0.7, 1.3], and with
probability 1 % a multipath outlier of 40-250 m in a random direction whose reported accuracy stays
unchanged (the device does not know) - the worst case for any rule.

1. Compliant: a person stays put at distance D outside the edge of a 100 m exclusion circle for `--hours`.
   Printed per D: false violations per day for the jitter rule, for "one fix whose accuracy circle is wholly
   inside" (N = 1, T = 0) and for "one fix whose point is inside" (naive).
2. Violation: from 300 m out the person walks in at 1.4 m/s to 30 m inside the edge and stays 10 min,
   200 runs. Printed: detection rate and the delay from crossing the edge to the proving fix (p50 / p95).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from media_server.db.enums import ZoneKind  # noqa: E402
from media_server.location.zones import Fix, JitterRule, Zone, ZoneGeometry, breaches  # noqa: E402
from media_server.settings import LocationSettings  # noqa: E402
from tests.support.location import CENTRE, offset  # noqa: E402

RADIUS_M = 100.0
CORRELATION_S = 120.0
OUTLIER_P = 0.01
OUTLIER_M = (40.0, 250.0)
SIGMA_M = (4.0, 12.0)
DISTANCES_M = (10, 25, 50, 100, 200)
WALK_MPS = 1.4
DEPTH_M = 30.0
STAY_S = 600
ENTRY_RUNS = 200
T0 = datetime(2026, 12, 3, tzinfo=UTC)
TZ_NAME = "Asia/Almaty"


def noisy_track(
    true_x: np.ndarray, period_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, accuracy_m) of fixes for true positions (true_x, 0) east of the zone centre, in metres."""
    n = len(true_x)
    sigma = rng.uniform(*SIGMA_M)
    rho = math.exp(-period_s / CORRELATION_S)
    err = np.zeros((n, 2))
    innovation = rng.normal(0.0, sigma * math.sqrt(1 - rho**2), (n, 2))
    err[0] = rng.normal(0.0, sigma, 2)
    for i in range(1, n):
        err[i] = rho * err[i - 1] + innovation[i]
    outlier = rng.random(n) < OUTLIER_P
    angle = rng.uniform(0, 2 * math.pi, n)
    jump = rng.uniform(*OUTLIER_M, n)
    err[outlier, 0] += (jump * np.cos(angle))[outlier]
    err[outlier, 1] += (jump * np.sin(angle))[outlier]
    acc = 2.0 * sigma * rng.uniform(0.7, 1.3, n)
    return true_x + err[:, 0], err[:, 1], acc


def to_fixes(x: np.ndarray, y: np.ndarray, acc: np.ndarray, period_s: float) -> list[Fix]:
    out = []
    for i in range(len(x)):
        lat, lon = offset(float(x[i]), float(y[i]))
        out.append(Fix(T0 + timedelta(seconds=i * period_s), lat, lon, float(acc[i]), i + 1))
    return out


def proving_time_s(fix_ids: tuple[int, ...], period_s: float, rule: JitterRule) -> float:
    """When the breach first satisfied the rule (the fix a batch-by-batch evaluation announces it on)."""
    times = [(i - 1) * period_s for i in fix_ids]
    for j, t in enumerate(times):
        if j + 1 >= rule.min_fixes and t - times[0] >= rule.min_duration_s:
            return t
    raise ValueError("not a breach under this rule")


def main() -> None:
    from zoneinfo import ZoneInfo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=168.0, help="compliant track length per distance")
    ap.add_argument("--period-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tz = ZoneInfo(TZ_NAME)
    s = LocationSettings()
    rule = JitterRule(s.min_fixes, s.min_duration_s, s.max_gap_s, s.max_accuracy_m)
    single = JitterRule(1, 0.0, s.max_gap_s, s.max_accuracy_m)
    geometry = ZoneGeometry(
        {"type": "circle", "lat": CENTRE[0], "lon": CENTRE[1], "radius_m": RADIUS_M},
        max_vertices=10,
        min_radius_m=s.min_circle_radius_m,
        max_extent_m=s.max_zone_extent_m,
    )
    zone = Zone("victim", ZoneKind.EXCLUSION, geometry, None, "victim")
    n = int(args.hours * 3600 / args.period_s)
    days = args.hours / 24
    print(
        f"SYNTHETIC tracks: fix every {args.period_s:.0f} s, AR(1) error sigma 4-12 m (tau {CORRELATION_S:.0f} s), "
        f"{OUTLIER_P:.0%} multipath outliers {OUTLIER_M[0]:.0f}-{OUTLIER_M[1]:.0f} m; rule: {rule.min_fixes} fixes "
        f"over >= {rule.min_duration_s:.0f} s, accuracy circle wholly inside, max accuracy {rule.max_accuracy_m:.0f} m"
    )
    print("compliant, stationary outside a 100 m exclusion circle - false violations per day:")
    for d in DISTANCES_M:
        x, y, acc = noisy_track(np.full(n, RADIUS_M + d), args.period_s, rng)
        fixes = to_fixes(x, y, acc, args.period_s)
        ours = len(breaches(zone, fixes, rule, tz)) / days
        one = len(breaches(zone, fixes, single, tz)) / days
        naive = int(np.sum(np.hypot(x, y) < RADIUS_M)) / days
        print(
            f"  {d:>4} m outside: jitter rule {ours:6.2f}   one wholly-inside fix {one:7.2f}   one point inside {naive:7.2f}"
        )

    delays: list[float] = []
    walk_s = (300.0 + DEPTH_M) / WALK_MPS
    steps = int((walk_s + STAY_S) / args.period_s)
    for _ in range(ENTRY_RUNS):
        t = np.arange(steps) * args.period_s
        true_x = np.maximum(RADIUS_M + 300.0 - WALK_MPS * t, RADIUS_M - DEPTH_M)
        x, y, acc = noisy_track(true_x, args.period_s, rng)
        found = breaches(zone, to_fixes(x, y, acc, args.period_s), rule, tz)
        if found:
            delays.append(proving_time_s(found[0].fix_ids, args.period_s, rule) - 300.0 / WALK_MPS)
    rate = len(delays) / ENTRY_RUNS
    quant = statistics.quantiles(delays, n=20) if len(delays) > 1 else delays * 19
    print(
        f"real entry to {DEPTH_M:.0f} m inside, staying {STAY_S // 60} min ({ENTRY_RUNS} runs): detected {rate:.1%}; "
        f"delay from crossing the edge to the proving fix p50 {statistics.median(delays):.0f} s, p95 {quant[18]:.0f} s"
    )


if __name__ == "__main__":
    main()
