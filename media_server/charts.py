"""Small SVG charts drawn on the server from the data (no script, no CDN): the person page's history.

Each function returns an SVG document fragment as a string; every value that reaches the markup is a
number formatted here or text escaped with `html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape

WIDTH = 640
HEIGHT = 200
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 36
COLOURS = {"pass": "#0a7a32", "fail": "#b3261e", "review": "#a15c00", "limit": "#b3261e", "line": "#1f3a5f"}


def _x(i: float, n: float) -> float:
    span = WIDTH - PAD_L - PAD_R
    return PAD_L + (span * i / n if n > 0 else span / 2)


def _y(v: float, top: float) -> float:
    span = HEIGHT - PAD_T - PAD_B
    return HEIGHT - PAD_B - (span * v / top if top > 0 else 0)


def brac_chart(
    points: Sequence[tuple[datetime, float, str]], limit: float | None, unit: str, labels: Mapping[str, str]
) -> str:
    """BrAC readings over time (dots coloured by verdict, joined in time order) against the order's limit.

    points: (taken at, value in `unit`, decision); labels: "title", "limit", "empty" in the reader's language.
    """
    if not points:
        return f'<p class="empty">{escape(labels["empty"])}</p>'
    pts = sorted(points)
    top = max([v for _, v, _ in pts] + [limit or 0.0]) * 1.25 or 0.1
    t0, t1 = pts[0][0].timestamp(), pts[-1][0].timestamp()
    span = max(t1 - t0, 1.0)
    xy = [(_x(ts.timestamp() - t0, span), _y(v, top), d, v, ts) for ts, v, d in pts]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(labels["title"])}">',
        f'<line x1="{PAD_L}" y1="{HEIGHT - PAD_B}" x2="{WIDTH - PAD_R}" y2="{HEIGHT - PAD_B}" stroke="#888"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{HEIGHT - PAD_B}" stroke="#888"/>',
        f'<text x="4" y="{PAD_T + 10}" font-size="11">{top:.3f}</text>',
        f'<text x="4" y="{HEIGHT - PAD_B}" font-size="11">0</text>',
        f'<text x="{PAD_L}" y="{HEIGHT - 6}" font-size="11">{escape(pts[0][0].strftime("%Y-%m-%d"))}</text>',
        f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 6}" font-size="11" text-anchor="end">'
        f"{escape(pts[-1][0].strftime('%Y-%m-%d'))}</text>",
    ]
    if limit is not None:
        y = _y(limit, top)
        parts.append(
            f'<line class="limit" x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" '
            f'stroke="{COLOURS["limit"]}" stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - PAD_R}" y="{y - 4:.1f}" font-size="11" text-anchor="end" fill="{COLOURS["limit"]}">'
            f"{escape(labels['limit'])} {limit:.3f} {escape(unit)}</text>"
        )
    if len(xy) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in xy)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS["line"]}" stroke-width="1.5"/>')
    for x, y, d, v, ts in xy:
        parts.append(
            f'<circle class="reading {escape(d)}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
            f'fill="{COLOURS.get(d, "#555")}"><title>{escape(ts.strftime("%Y-%m-%d %H:%M"))}: '
            f"{v:.3f} {escape(unit)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def outcome_chart(days: Mapping[str, Mapping[str, int]], labels: Mapping[str, str]) -> str:
    """Check-in outcomes per day as stacked bars (pass, review, fail). labels: decision words, "title", "empty"."""
    if not days:
        return f'<p class="empty">{escape(labels["empty"])}</p>'
    keys = list(days)
    top = max(sum(c.values()) for c in days.values()) or 1
    n = len(keys)
    bar = max(min((WIDTH - PAD_L - PAD_R) / n * 0.7, 40), 3)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(labels["title"])}">',
        f'<line x1="{PAD_L}" y1="{HEIGHT - PAD_B}" x2="{WIDTH - PAD_R}" y2="{HEIGHT - PAD_B}" stroke="#888"/>',
        f'<text x="4" y="{PAD_T + 10}" font-size="11">{top}</text>',
    ]
    for i, day in enumerate(keys):
        x = _x(i + 0.5, n) - bar / 2
        base = 0
        for decision in ("pass", "review", "fail"):
            count = int(days[day].get(decision, 0))
            if not count:
                continue
            y_top, y_base = _y(base + count, top), _y(base, top)
            parts.append(
                f'<rect class="day {decision}" x="{x:.1f}" y="{y_top:.1f}" width="{bar:.1f}" '
                f'height="{y_base - y_top:.1f}" fill="{COLOURS[decision]}"><title>{escape(day)}: '
                f"{escape(labels[decision])} {count}</title></rect>"
            )
            base += count
        if n <= 14 or i in (0, n - 1):
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 20}" font-size="10" text-anchor="middle">'
                f"{escape(day[5:])}</text>"
            )
    legend_x = PAD_L
    for decision in ("pass", "review", "fail"):
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 12}" width="10" height="10" fill="{COLOURS[decision]}"/>'
            f'<text x="{legend_x + 14}" y="{HEIGHT - 3}" font-size="11">{escape(labels[decision])}</text>'
        )
        legend_x += 120
    parts.append("</svg>")
    return "".join(parts)
