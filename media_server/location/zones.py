"""Zones and the rule that turns noisy position fixes into zone violations. Pure: no web, no database.

Geometry is shapely's, in metres: each zone is projected from WGS 84 lon/lat with pyproj onto an
azimuthal equidistant plane centred on the zone (a circle's centre, a polygon's vertex centroid), where
distances from the centre are exact and the scale error at 50 km is below 0.01 %.

Jitter rule (bounded settings in `LocationSettings`):

* a fix counts as INSIDE only when its whole accuracy circle (radius `accuracy_m`) is inside the zone,
  as OUTSIDE only when it is wholly outside; otherwise it is UNCERTAIN and neither extends nor breaks a run;
  fixes with `accuracy_m > max_accuracy_m` are UNCERTAIN whatever their position;
* a breach of a zone is a run of fixes, in time order, each on the wrong side (inside an exclusion zone,
  outside an inclusion zone during its hours), with no fix on the right side between them, no two
  consecutive ones more than `max_gap_s` apart, at least `min_fixes` of them spanning at least
  `min_duration_s`. One noisy fix never makes a breach when `min_fixes >= 2`.
* fixes outside the zone's hours end a run (the rule does not apply then).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from media_server.db.enums import ZoneKind

WGS84 = "EPSG:4326"
CIRCLE = "circle"
POLYGON = "polygon"


class ZoneError(ValueError):
    """A zone definition that cannot be used (the API answers 400 with its message)."""


class Side(StrEnum):
    """Where a fix lies relative to a zone, accuracy circle included."""

    INSIDE = "inside"
    OUTSIDE = "outside"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class Fix:
    """One position: `t` aware, WGS 84 degrees, `accuracy_m` the 1-sigma-ish radius the device reports."""

    t: datetime
    lat: float
    lon: float
    accuracy_m: float
    id: int = 0


@dataclass(frozen=True, slots=True)
class DailyHours:
    """Local wall-clock hours a zone applies, e.g. 22:00-06:00 (crosses midnight). `start != end`."""

    start: time
    end: time

    def active(self, t: datetime, tz: ZoneInfo) -> bool:
        """True when `t` (aware) falls in these hours in `tz`."""
        local = t.astimezone(tz).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def to_json(self) -> dict[str, str]:
        """{"start": "HH:MM", "end": "HH:MM"}."""
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


def parse_hours(value: Mapping[str, Any] | None) -> DailyHours | None:
    """DailyHours from {"start": "HH:MM", "end": "HH:MM"}; None stays None (always active)."""
    if value is None:
        return None
    try:
        start = time.fromisoformat(str(value["start"]))
        end = time.fromisoformat(str(value["end"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ZoneError('hours must be {"start": "HH:MM", "end": "HH:MM"}') from exc
    if start == end:
        raise ZoneError("hours start and end are equal; leave hours out for a zone that always applies")
    return DailyHours(start.replace(tzinfo=None), end.replace(tzinfo=None))


def timezone_of(name: str) -> ZoneInfo:
    """The IANA zone `name`; ZoneError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ZoneError(f"unknown time zone {name!r}") from exc


class ZoneGeometry:
    """A circle or polygon projected to metres around its centre; classifies fixes with their accuracy."""

    def __init__(
        self, geometry: Mapping[str, Any], *, max_vertices: int, min_radius_m: float, max_extent_m: float
    ):
        kind = geometry.get("type")
        self.spec: dict[str, Any]
        if kind == CIRCLE:
            lat, lon, radius = _num(geometry, "lat"), _num(geometry, "lon"), _num(geometry, "radius_m")
            _check_lat_lon(lat, lon)
            if not min_radius_m <= radius <= max_extent_m:
                raise ZoneError(f"radius_m must be between {min_radius_m} and {max_extent_m} m")
            self.center = (lon, lat)
            self._to_m = _local_projection(lat, lon)
            self._radius_m: float | None = radius
            self.shape: shapely.Geometry = Point(0.0, 0.0)
            self.spec = {"type": CIRCLE, "lat": lat, "lon": lon, "radius_m": radius}
        elif kind == POLYGON:
            ring = _ring(geometry.get("coordinates"), max_vertices)
            lon0 = sum(p[0] for p in ring) / len(ring)
            lat0 = sum(p[1] for p in ring) / len(ring)
            self.center = (lon0, lat0)
            self._to_m = _local_projection(lat0, lon0)
            xs, ys = self._to_m.transform([p[0] for p in ring], [p[1] for p in ring])
            polygon = Polygon(list(zip(xs, ys, strict=True)))
            if not polygon.is_valid or polygon.area <= 0:
                raise ZoneError(f"the polygon is not valid: {shapely.is_valid_reason(polygon)}")
            extent = max(math.hypot(x, y) for x, y in zip(xs, ys, strict=True))
            if extent > max_extent_m:
                raise ZoneError(
                    f"the polygon reaches {extent:.0f} m from its centre (limit {max_extent_m} m)"
                )
            self._radius_m = None
            self.shape = polygon
            self._boundary = polygon.boundary
            shapely.prepare(self.shape)
            self.spec = {"type": POLYGON, "coordinates": [list(p) for p in ring]}
        else:
            raise ZoneError('geometry type must be "circle" or "polygon"')

    def sides(self, fixes: Sequence[Fix], max_accuracy_m: float) -> list[Side]:
        """The side of each fix, its accuracy circle taken into account (vectorised)."""
        if not fixes:
            return []
        lon = np.fromiter((f.lon for f in fixes), float, len(fixes))
        lat = np.fromiter((f.lat for f in fixes), float, len(fixes))
        acc = np.fromiter((f.accuracy_m for f in fixes), float, len(fixes))
        x, y = self._to_m.transform(lon, lat)
        points = shapely.points(x, y)
        if self._radius_m is not None:
            d = shapely.distance(points, self.shape)
            inside = d + acc <= self._radius_m
            outside = d - acc >= self._radius_m
        else:
            contains = shapely.contains_xy(self.shape, x, y)
            to_edge = shapely.distance(points, self._boundary)
            inside = contains & (to_edge >= acc)
            outside = ~contains & (to_edge >= acc)
        usable = acc <= max_accuracy_m
        out = []
        for i in range(len(fixes)):
            if not usable[i]:
                out.append(Side.UNCERTAIN)
            elif inside[i]:
                out.append(Side.INSIDE)
            elif outside[i]:
                out.append(Side.OUTSIDE)
            else:
                out.append(Side.UNCERTAIN)
        return out


def _num(geometry: Mapping[str, Any], key: str) -> float:
    value = geometry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ZoneError(f"{key} must be a finite number")
    return float(value)


def _check_lat_lon(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ZoneError("lat must be in [-90, 90] and lon in [-180, 180]")


def _ring(coordinates: object, max_vertices: int) -> list[tuple[float, float]]:
    if not isinstance(coordinates, list) or not 3 <= len(coordinates) <= max_vertices + 1:
        raise ZoneError(f"coordinates must be a list of 3 to {max_vertices} [lon, lat] pairs")
    ring: list[tuple[float, float]] = []
    for pair in coordinates:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ZoneError("each coordinate is a [lon, lat] pair")
        lon, lat = _num({"lon": pair[0]}, "lon"), _num({"lat": pair[1]}, "lat")
        _check_lat_lon(lat, lon)
        ring.append((lon, lat))
    if ring[0] == ring[-1]:
        ring = ring[:-1]  # a closed GeoJSON ring repeats its first vertex
    if len(ring) < 3:
        raise ZoneError("a polygon needs at least 3 distinct vertices")
    return ring


def _local_projection(lat: float, lon: float) -> Transformer:
    """lon/lat -> metres on an azimuthal equidistant plane centred on (lat, lon)."""
    return Transformer.from_crs(
        WGS84, f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m +no_defs", always_xy=True
    )


@dataclass(frozen=True)
class Zone:
    """One zone of a person, ready to classify fixes."""

    id: str
    kind: ZoneKind
    geometry: ZoneGeometry
    hours: DailyHours | None
    label: str = ""


@dataclass(frozen=True, slots=True)
class JitterRule:
    """How many fixes, over how long, make a breach (see the module docstring)."""

    min_fixes: int
    min_duration_s: float
    max_gap_s: float
    max_accuracy_m: float


@dataclass(frozen=True, slots=True)
class Breach:
    """A run of fixes proving the person was on the wrong side of a zone from `start` to `end`."""

    zone_id: str
    kind: ZoneKind
    start: datetime
    end: datetime
    fix_ids: tuple[int, ...]

    @property
    def code(self) -> str:
        """exclusion_entered or inclusion_left."""
        return "exclusion_entered" if self.kind is ZoneKind.EXCLUSION else "inclusion_left"


def on_wrong_side(zone: Zone, fixes: Sequence[Fix], rule: JitterRule, tz: ZoneInfo) -> bool:
    """True when any of `fixes` counts as on the wrong side of `zone` (during its hours).

    Only such a fix can create or extend a breach (fixes on the right side only end runs, uncertain ones
    change nothing), so a batch without one needs no re-evaluation of its span.
    """
    wrong = Side.INSIDE if zone.kind is ZoneKind.EXCLUSION else Side.OUTSIDE
    for fix, side in zip(fixes, zone.geometry.sides(fixes, rule.max_accuracy_m), strict=True):
        if side is wrong and (zone.hours is None or zone.hours.active(fix.t, tz)):
            return True
    return False


def breaches(zone: Zone, fixes: Sequence[Fix], rule: JitterRule, tz: ZoneInfo) -> list[Breach]:
    """Every breach of `zone` in `fixes` (sorted here by time, then id)."""
    ordered = sorted(fixes, key=lambda f: (f.t, f.id))
    wrong = Side.INSIDE if zone.kind is ZoneKind.EXCLUSION else Side.OUTSIDE
    right = Side.OUTSIDE if zone.kind is ZoneKind.EXCLUSION else Side.INSIDE
    out: list[Breach] = []
    run: list[Fix] = []

    def close() -> None:
        if len(run) >= rule.min_fixes and (run[-1].t - run[0].t).total_seconds() >= rule.min_duration_s:
            out.append(Breach(zone.id, zone.kind, run[0].t, run[-1].t, tuple(f.id for f in run)))
        run.clear()

    for fix, side in zip(ordered, zone.geometry.sides(ordered, rule.max_accuracy_m), strict=True):
        if zone.hours is not None and not zone.hours.active(fix.t, tz):
            close()
            continue
        if run and (fix.t - run[-1].t).total_seconds() > rule.max_gap_s and side is not Side.UNCERTAIN:
            close()
        if side is wrong:
            run.append(fix)
        elif side is right:
            close()
    close()
    return out
