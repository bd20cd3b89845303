"""Zone geometry and the jitter rule (media_server.location.zones, .policy): pure, no database."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from media_server.db.enums import AlertKind, DeviceEventType, ZoneKind
from media_server.location.policy import POLICY, policy_for
from media_server.location.zones import (
    DailyHours,
    Fix,
    JitterRule,
    Side,
    Zone,
    ZoneError,
    ZoneGeometry,
    breaches,
    parse_hours,
)
from media_server.settings import LocationSettings

ALMATY = ZoneInfo("Asia/Almaty")  # UTC+5
CENTRE = (43.2380, 76.9450)  # lat, lon
RADIUS_M = 100.0
RULE = JitterRule(min_fixes=3, min_duration_s=60, max_gap_s=600, max_accuracy_m=150)
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # 14:00 in Almaty
BOUNDS = {"max_vertices": 100, "min_radius_m": 10.0, "max_extent_m": 50_000.0}


def offset(dx_m: float, dy_m: float, origin: tuple[float, float] = CENTRE) -> tuple[float, float]:
    """(lat, lon) of a point dx_m east and dy_m north of `origin` (small offsets)."""
    lat, lon = origin
    return lat + dy_m / 111_320.0, lon + dx_m / (111_320.0 * math.cos(math.radians(lat)))


def fix(i: int, dx_m: float, acc: float = 10.0, *, t: datetime | None = None, step_s: float = 30) -> Fix:
    lat, lon = offset(dx_m, 0.0)
    return Fix(t=t or T0 + timedelta(seconds=i * step_s), lat=lat, lon=lon, accuracy_m=acc, id=i + 1)


def circle(kind: ZoneKind, hours: DailyHours | None = None) -> Zone:
    geometry = ZoneGeometry(
        {"type": "circle", "lat": CENTRE[0], "lon": CENTRE[1], "radius_m": RADIUS_M}, **BOUNDS
    )
    return Zone("z1", kind, geometry, hours, "victim's address")


def test_a_fix_counts_only_when_its_accuracy_circle_is_wholly_on_one_side() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    sides = zone.geometry.sides(
        [
            fix(0, 0, acc=50),  # centre, circle of 50 m inside a 100 m zone
            fix(1, 80, acc=10),  # 80 m out, 10 m accuracy: wholly inside (90 <= 100)
            fix(2, 80, acc=30),  # straddles the edge
            fix(3, 130, acc=20),  # 130 m, 20 m accuracy: wholly outside (110 >= 100)
            fix(4, 130, acc=40),  # straddles
            fix(5, 0, acc=200),  # worse than max_accuracy_m: never counts
        ],
        RULE.max_accuracy_m,
    )
    assert sides == [Side.INSIDE, Side.INSIDE, Side.UNCERTAIN, Side.OUTSIDE, Side.UNCERTAIN, Side.UNCERTAIN]


def test_entering_an_exclusion_zone_needs_n_fixes_over_t_seconds() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    fixes = [fix(0, 500), fix(1, 300), fix(2, 20), fix(3, 10), fix(4, 0), fix(5, 400)]
    found = breaches(zone, fixes, RULE, ALMATY)
    assert len(found) == 1
    assert found[0].fix_ids == (3, 4, 5)
    assert found[0].code == "exclusion_entered"
    assert (found[0].start, found[0].end) == (fixes[2].t, fixes[4].t)


def test_one_noisy_fix_never_makes_a_violation() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    # Sitting 300 m away; one multipath jump lands in the zone, and one in-zone fix with a poor accuracy.
    fixes = [fix(i, 300) for i in range(10)]
    fixes[4] = fix(4, 5, acc=8)
    fixes[6] = fix(6, 0, acc=140)  # 140 m circle straddles the 100 m zone
    assert breaches(zone, fixes, RULE, ALMATY) == []


def test_enough_fixes_too_quickly_is_not_a_violation() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    fixes = [fix(i, 0, step_s=10) for i in range(5)]  # 5 fixes over 40 s < 60 s
    assert breaches(zone, fixes, RULE, ALMATY) == []
    assert len(breaches(zone, [*fixes, fix(7, 0, step_s=10)], RULE, ALMATY)) == 1  # 60 s reached


def test_a_fix_on_the_right_side_breaks_a_run_and_uncertain_ones_do_not() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    broken = [fix(0, 0), fix(1, 0), fix(2, 500), fix(3, 0), fix(4, 0)]
    assert breaches(zone, broken, RULE, ALMATY) == []
    straddling = [fix(0, 0), fix(1, 0), fix(2, 95, acc=30), fix(3, 0)]
    assert [b.fix_ids for b in breaches(zone, straddling, RULE, ALMATY)] == [(1, 2, 4)]


def test_a_tracking_gap_splits_a_run() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    fixes = [
        fix(0, 0),
        fix(1, 0),
        fix(2, 0, t=T0 + timedelta(seconds=30 + 601)),
        fix(3, 0, t=T0 + timedelta(hours=1)),
    ]
    assert breaches(zone, fixes, RULE, ALMATY) == []


def test_out_of_order_fixes_are_judged_in_time_order() -> None:
    zone = circle(ZoneKind.EXCLUSION)
    fixes = [fix(0, 400), fix(1, 0), fix(2, 0), fix(3, 0), fix(4, 400), fix(5, 0), fix(6, 0)]
    expected = breaches(zone, fixes, RULE, ALMATY)
    shuffled = fixes[:]
    random.Random(7).shuffle(shuffled)
    assert breaches(zone, shuffled, RULE, ALMATY) == expected
    assert [b.fix_ids for b in expected] == [(2, 3, 4)]


def test_leaving_an_inclusion_zone_counts_only_during_its_hours() -> None:
    night = DailyHours(time(22, 0), time(6, 0))
    zone = circle(ZoneKind.INCLUSION, night)
    away = 1000.0
    evening = datetime(2026, 12, 3, 17, 30, tzinfo=UTC)  # 22:30 in Almaty
    afternoon = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)  # 14:30 in Almaty
    at_night = [fix(i, away, t=evening + timedelta(minutes=i)) for i in range(4)]
    by_day = [fix(i, away, t=afternoon + timedelta(minutes=i)) for i in range(4)]
    found = breaches(zone, at_night, RULE, ALMATY)
    assert [b.code for b in found] == ["inclusion_left"]
    assert breaches(zone, by_day, RULE, ALMATY) == []
    at_home = [fix(i, 0, t=evening + timedelta(minutes=i)) for i in range(4)]
    assert breaches(zone, at_home, RULE, ALMATY) == []


def test_hours_cross_midnight_in_the_persons_time_zone() -> None:
    night = DailyHours(time(22, 0), time(6, 0))
    assert night.active(datetime(2026, 12, 3, 17, 0, tzinfo=UTC), ALMATY)  # 22:00 local
    assert night.active(datetime(2026, 12, 3, 0, 59, tzinfo=UTC), ALMATY)  # 05:59 local
    assert not night.active(datetime(2026, 12, 3, 1, 0, tzinfo=UTC), ALMATY)  # 06:00 local
    assert not night.active(datetime(2026, 12, 3, 16, 59, tzinfo=UTC), ALMATY)  # 21:59 local
    assert parse_hours({"start": "08:00", "end": "18:00"}) == DailyHours(time(8), time(18))
    with pytest.raises(ZoneError):
        parse_hours({"start": "08:00", "end": "08:00"})
    with pytest.raises(ZoneError):
        parse_hours({"start": "25:00", "end": "08:00"})


def _square(half_m: float) -> list[list[float]]:
    corners = [(-half_m, -half_m), (half_m, -half_m), (half_m, half_m), (-half_m, half_m)]
    return [[offset(x, y)[1], offset(x, y)[0]] for x, y in corners]


def test_polygon_zones_use_the_distance_to_their_edge() -> None:
    geometry = ZoneGeometry({"type": "polygon", "coordinates": _square(100)}, **BOUNDS)
    sides = geometry.sides(
        [fix(0, 0, acc=50), fix(1, 90, acc=20), fix(2, 150, acc=20), fix(3, 150, acc=60)], 150
    )
    assert sides == [Side.INSIDE, Side.UNCERTAIN, Side.OUTSIDE, Side.UNCERTAIN]
    zone = Zone("p", ZoneKind.EXCLUSION, geometry, None)
    assert len(breaches(zone, [fix(i, 0) for i in range(4)], RULE, ALMATY)) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {
            "type": "polygon",
            "coordinates": [[76.0, 43.0], [76.01, 43.01], [76.0, 43.01], [76.01, 43.0]],
        },  # bow tie
        {"type": "polygon", "coordinates": [[76.0, 43.0], [76.01, 43.0]]},
        {"type": "polygon", "coordinates": [[76.0, 43.0], [76.01, 95.0], [76.02, 43.0]]},
        {"type": "circle", "lat": 43.0, "lon": 76.0, "radius_m": 5},
        {"type": "circle", "lat": 43.0, "lon": 76.0, "radius_m": 60_000},
        {"type": "circle", "lat": "43", "lon": 76.0, "radius_m": 100},
        {"type": "circle", "lat": float("nan"), "lon": 76.0, "radius_m": 100},
        {"type": "square"},
    ],
)
def test_unusable_zones_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ZoneError):
        ZoneGeometry(spec, **BOUNDS)


def test_every_device_event_has_a_policy_and_equipment_trouble_is_never_a_violation() -> None:
    assert set(POLICY) == set(DeviceEventType)
    assert policy_for(DeviceEventType.STRAP_OPENED).alert is AlertKind.VIOLATION
    assert policy_for(DeviceEventType.CASE_OPENED).alert is AlertKind.VIOLATION
    for technical in (DeviceEventType.POWER_LOST, DeviceEventType.LOW_BATTERY, DeviceEventType.OUT_OF_RANGE):
        assert policy_for(technical).alert is AlertKind.TECHNICAL
    assert policy_for(DeviceEventType.HEARTBEAT).alert is None


def test_the_reevaluation_window_must_cover_a_whole_breach() -> None:
    with pytest.raises(ValidationError):
        LocationSettings(min_fixes=5, max_gap_s=3600, reevaluate_window_s=3600)
    assert LocationSettings(min_fixes=5, max_gap_s=600, reevaluate_window_s=3600).min_fixes == 5
