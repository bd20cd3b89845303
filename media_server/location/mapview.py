"""A person's map as inline SVG: zones, the track and the fixes that prove violations. No tiles, no network.

Everything is drawn in metres on an azimuthal equidistant plane centred on the data (pyproj), so the map
is true to scale around the person's area; north is up. The SVG is built here from numbers and escaped
labels only, so the page can embed it as markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import shapely
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from media_server.db.enums import ZoneKind
from media_server.location.zones import CIRCLE, WGS84, Fix, Zone

WIDTH_PX = 800
HEIGHT_PX = 600
MARGIN_PX = 24
MIN_SPAN_M = 200.0  # the smallest area shown, so one fix does not fill the map
CIRCLE_SEGMENTS = 16  # per quarter circle
SCALE_STEPS_M = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
ZONE_STYLE = {
    ZoneKind.INCLUSION: 'fill="#2e7d32" fill-opacity="0.15" stroke="#2e7d32"',
    ZoneKind.EXCLUSION: 'fill="#c62828" fill-opacity="0.15" stroke="#c62828"',
}


@dataclass(frozen=True, slots=True)
class _Frame:
    """Metres -> pixels: x right, y down."""

    x0: float
    y1: float
    scale: float

    def px(self, x: float, y: float) -> tuple[float, float]:
        return MARGIN_PX + (x - self.x0) * self.scale, MARGIN_PX + (self.y1 - y) * self.scale


def _zone_shape_m(zone: Zone, to_m: Transformer) -> Polygon:
    spec = zone.geometry.spec
    if spec["type"] == CIRCLE:
        x, y = to_m.transform(spec["lon"], spec["lat"])
        shape: Polygon = Point(x, y).buffer(spec["radius_m"], quad_segs=CIRCLE_SEGMENTS)
        return shape
    xs, ys = to_m.transform([p[0] for p in spec["coordinates"]], [p[1] for p in spec["coordinates"]])
    return Polygon(list(zip(xs, ys, strict=True)))


def _points(frame: _Frame, coords: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in (frame.px(x, y) for x, y in coords))


def render_svg(zones: Sequence[Zone], fixes: Sequence[Fix], proof_ids: set[int]) -> str:
    """The map as an <svg> element; `fixes` in any order (drawn in time order)."""
    ordered = sorted(fixes, key=lambda f: (f.t, f.id))
    lons = [f.lon for f in ordered] + [z.geometry.center[0] for z in zones]
    lats = [f.lat for f in ordered] + [z.geometry.center[1] for z in zones]
    if not lons:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}"></svg>'
    lon0, lat0 = sum(lons) / len(lons), sum(lats) / len(lats)
    to_m = Transformer.from_crs(
        WGS84, f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m +no_defs", always_xy=True
    )
    shapes = [(zone, _zone_shape_m(zone, to_m)) for zone in zones]
    xs, ys = to_m.transform([f.lon for f in ordered], [f.lat for f in ordered]) if ordered else ([], [])
    bounds = shapely.total_bounds(
        [shape for _, shape in shapes] + [Point(x, y) for x, y in zip(xs, ys, strict=True)]
    )
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    span_x, span_y = max(maxx - minx, MIN_SPAN_M), max(maxy - miny, MIN_SPAN_M)
    scale = min((WIDTH_PX - 2 * MARGIN_PX) / span_x, (HEIGHT_PX - 2 * MARGIN_PX) / span_y)
    frame = _Frame(
        cx - (WIDTH_PX - 2 * MARGIN_PX) / scale / 2, cy + (HEIGHT_PX - 2 * MARGIN_PX) / scale / 2, scale
    )

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="location-map" width="{WIDTH_PX}" height="{HEIGHT_PX}" '
        f'viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}" role="img"><rect width="100%" height="100%" fill="#fafafa"/>'
    ]
    for zone, shape in shapes:
        label = html.escape(zone.label)
        out.append(
            f'<polygon class="zone zone-{zone.kind.value}" {ZONE_STYLE[zone.kind]} '
            f'points="{_points(frame, shape.exterior.coords)}"><title>{label}</title></polygon>'
        )
        lx, ly = frame.px(shape.centroid.x, shape.centroid.y)
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="12" text-anchor="middle">{label}</text>')
    if len(ordered) > 1:
        out.append(
            f'<polyline class="track" fill="none" stroke="#1f3a5f" stroke-width="1.5" '
            f'points="{_points(frame, zip(xs, ys, strict=True))}"/>'
        )
    for fix, x, y in zip(ordered, xs, ys, strict=True):
        px, py = frame.px(x, y)
        proof = fix.id in proof_ids
        if proof:
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{max(fix.accuracy_m * scale, 1):.1f}" '
                'fill="none" stroke="#c62828" stroke-dasharray="3 2"/>'
            )
        colour = "#c62828" if proof else "#1f3a5f"
        out.append(
            f'<circle class="fix{" proof" if proof else ""}" cx="{px:.1f}" cy="{py:.1f}" r="{4 if proof else 2.5}" '
            f'fill="{colour}"><title>{html.escape(fix.t.isoformat())} +-{fix.accuracy_m:.0f} m</title></circle>'
        )
    out.append(_scale_bar(scale))
    out.append("</svg>")
    return "".join(out)


def _scale_bar(scale: float) -> str:
    target_m = (WIDTH_PX / 5) / scale
    step = max((s for s in SCALE_STEPS_M if s <= target_m), default=SCALE_STEPS_M[0])
    length = step * scale
    y = HEIGHT_PX - MARGIN_PX / 2
    text = f"{step // 1000} km" if step >= 1000 else f"{step} m"
    return (
        f'<line x1="{MARGIN_PX}" y1="{y}" x2="{MARGIN_PX + length:.1f}" y2="{y}" stroke="#000" stroke-width="2"/>'
        f'<text x="{MARGIN_PX + length + 4:.1f}" y="{y + 4}" font-size="11">{text}</text>'
        f'<text x="{WIDTH_PX - MARGIN_PX}" y="{MARGIN_PX}" font-size="12" text-anchor="end">N &#8593;</text>'
    )
