"""What the reviewer workstation shows, built from stored rows: plain dicts in the reader's language.

Pure functions over database rows and JSON: no requests, no templates. The workstation router loads the
rows, calls these, and hands the result to a template.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from media_server.db.models import Artifact, CheckResultRecord, Person
from media_server.i18n import (
    N_,
    OUTCOME_WORDS,
    PROMPTS,
    Translator,
    check_name,
    check_reason,
    score_sentence,
    word,
)
from media_server.schedules.rules import ALL_DAYS, DailyRule, RandomRule, parse_rule

DEFAULT_TIMEZONE = "Asia/Almaty"
# Which outcomes drive a verdict, most important first.
_DRIVER_ORDER = {"fail": 0, "technical": 1, "inconclusive": 2}
MAX_DRIVERS = 2
# Readable labels of the fields of a signed breath reading (sobriety.reading.BreathReading).
READING_FIELDS: tuple[tuple[str, str], ...] = (
    ("brac", N_("BrAC")),
    ("unit", N_("Unit")),
    ("device_serial", N_("Station serial")),
    ("calibrated_on", N_("Calibrated on")),
    ("blow_start", N_("Blow started")),
    ("blow_end", N_("Blow ended")),
    ("timestamp", N_("Signed at")),
    ("nonce", N_("Nonce")),
    ("person_id", N_("Person id")),
)


def zone(name: str | None) -> ZoneInfo:
    """The named time zone, Asia/Almaty when it is missing or unknown."""
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def local_time(ts: datetime | str | None, tz: ZoneInfo, *, seconds: bool = True) -> str:
    """`ts` in the zone, to the second, with the UTC offset: "2026-12-03 14:05:09 +05"."""
    if ts is None or ts == "":
        return "—"
    if isinstance(ts, str):
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            return ts
    else:
        moment = ts
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def person_zone(person: Person | None) -> ZoneInfo:
    """A person's own time zone (the agency's, Asia/Almaty, by default)."""
    return zone(person.timezone if person is not None else None)


def check_row(t: Translator, c: CheckResultRecord) -> dict[str, Any]:
    """One check as the session page shows it."""
    details = dict(c.details or {})
    return {
        "id": c.id,
        "kind": c.kind.value,
        "code": c.code,
        "name": check_name(t, c.kind.value),
        "outcome": c.outcome.value,
        "outcome_word": word(t, OUTCOME_WORDS, c.outcome.value),
        "reason": check_reason(t, c.code, c.message, details),
        "score": score_sentence(t, c.outcome.value, c.score, c.threshold, details),
        "model": f"{c.model_name} {c.model_version}" if c.model_name else "",
        "weights": (c.weights_sha256 or "")[:12],
        "step": details.get("step"),
    }


def ordered_checks(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the checks that drove the verdict, at most two, worst first; every check with those first)."""
    bad = sorted(
        (r for r in rows if r["outcome"] in _DRIVER_ORDER), key=lambda r: _DRIVER_ORDER[r["outcome"]]
    )
    drivers = bad[:MAX_DRIVERS]
    ids = {r["id"] for r in drivers}
    return drivers, drivers + [r for r in rows if r["id"] not in ids]


def recording_offset_s(artifacts: Iterable[Artifact]) -> float:
    """Session-clock time of the recording's first frame (0 when not stored).

    Prompt times are on the session clock (0 = offer accepted); the recording starts when media first
    arrive. The recorder's `t0_s` in the recording artifact's meta names that instant when stored.
    """
    for a in artifacts:
        value = (a.meta or {}).get("t0_s")
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return 0.0


# Why a stretch of a session recording is missing (the `cause` of a `recording_gap` event).
GAP_CAUSES = {
    "network_loss": N_("lost on the network"),
    "jitter_buffer": N_("received but discarded by the media receiver"),
    "timestamp_jump": N_("the phone stopped sending"),
    "recorder_overflow": N_("dropped by the overloaded recorder"),
    "before_keyframe": N_("before the first complete picture"),
    "codec": N_("in a format that cannot be stored"),
    "late_stream": N_("started after the recording had begun without it"),
    "recorder_failed": N_("the recorder failed; the rest of the recording is missing"),
}
GAP_KINDS = {"video": N_("video"), "audio": N_("audio")}


def recording_gaps(t: Translator, recording: Artifact, offset_s: float) -> dict[str, Any] | None:
    """What the reviewer is told about one recording: stored as received or re-encoded, and its gaps
    (from the recorder's meta), each with where to seek in the video. None for a recording stored
    before the recorder reported gaps."""
    meta = recording.meta or {}
    if "gaps" not in meta:
        return None
    codecs = ", ".join(str(c) for c in (meta.get("codecs") or {}).values())
    missing = meta.get("frames_missing") or {}
    rows = []
    for gap in meta.get("gap_list") or []:
        if not isinstance(gap, Mapping):
            continue
        t_s = gap.get("t_s")
        rows.append(
            {
                "seek_s": round(max(0.0, float(t_s) - offset_s), 2) if isinstance(t_s, int | float) else None,
                "kind": word(t, GAP_KINDS, str(gap.get("kind"))),
                "cause": word(t, GAP_CAUSES, str(gap.get("cause"))),
                "frames": int(gap.get("frames_missing") or 0),
                "seconds": float(gap.get("seconds") or 0.0),
            }
        )
    total = int(meta.get("gaps") or 0)
    return {
        "reencoded": bool(meta.get("reencoded")),
        "codecs": codecs,
        "total": total,
        "video": int(missing.get("video") or 0),
        "audio": int(missing.get("audio") or 0),
        "rows": rows,
        "unlisted": max(0, total - len(rows)),
    }


def challenge_timeline(
    t: Translator,
    challenge: Mapping[str, Any] | None,
    checks: Sequence[CheckResultRecord],
    offset_s: float,
) -> list[dict[str, Any]]:
    """One entry per challenge step: prompt, window, response seen, outcome, and where to seek the video.

    Prompt times come from each step's liveness / lip-sync result (`details.prompt_ts`, the time the prompt
    was delivered); a step without a result falls back to the planned time.
    """
    if not challenge:
        return []
    steps = list(challenge.get("steps") or [])
    if not steps and challenge.get("prompts"):  # older sessions stored only the prompt kinds
        steps = [{"kind": k, "window_s": None, "digits": ""} for k in challenge["prompts"]]
    by_step: dict[int, CheckResultRecord] = {}
    for check in checks:
        step = (check.details or {}).get("step")
        if isinstance(step, int) and check.kind.value in ("liveness", "av_sync"):
            by_step[step] = check
    planned, at = [], float(challenge.get("lead_in_s") or 0.0)
    for s in steps:
        planned.append(at)
        at += float(s.get("window_s") or 0.0) + float(challenge.get("gap_s") or 0.0)
    out = []
    for i, s in enumerate(steps):
        c = by_step.get(i)
        details = dict(c.details or {}) if c is not None else {}
        prompt = details.get("prompt_ts")
        shown = isinstance(prompt, int | float) and math.isfinite(prompt)
        prompt_s = float(prompt) if shown and prompt is not None else planned[i]
        window = details.get("window_s", s.get("window_s"))
        latency = details.get("response_latency_s")
        kind = str(s.get("kind", ""))
        label = word(t, PROMPTS, kind)
        if s.get("digits"):
            label = f"{label}: {s['digits']}"
        if isinstance(latency, int | float):
            response = t("seen {latency} s after the prompt", latency=f"{latency:.1f}")
            response_s = prompt_s + float(latency)
        elif c is not None and c.outcome.value == "pass":
            response = t("seen")
            response_s = None
        elif c is not None:
            response = check_reason(t, c.code, c.message, details)
            response_s = None
        else:
            response = t("not judged")
            response_s = None
        out.append(
            {
                "index": i,
                "label": label,
                "prompt_s": round(prompt_s, 2),
                "window_s": window,
                "shown": shown,
                "response": response,
                "outcome": c.outcome.value if c is not None else "",
                "outcome_word": word(t, OUTCOME_WORDS, c.outcome.value) if c is not None else "—",
                "score": score_sentence(t, c.outcome.value, c.score, c.threshold, details) if c else "",
                "seek_s": round(max(prompt_s - offset_s, 0.0), 2),
                "response_seek_s": round(max(response_s - offset_s, 0.0), 2)
                if response_s is not None
                else None,
            }
        )
    return out


def frame_cards(
    t: Translator, frames: Sequence[Artifact], checks: Sequence[CheckResultRecord], offset_s: float
) -> list[dict[str, Any]]:
    """Sampled frames with their boxes and a caption saying how the face check used each one."""
    face = next((c for c in checks if c.kind.value == "face"), None)
    details = dict(face.details or {}) if face is not None else {}
    listed = details.get("frames")
    per_frame = {
        int(f["index"]): f
        for f in (listed if isinstance(listed, list) else [])
        if isinstance(f, dict) and "index" in f
    }
    fused_from = details.get("fused_from")
    fused = set(fused_from) if isinstance(fused_from, list) else set()
    threshold = face.threshold if face is not None else None
    cards = []
    for a in frames:
        meta = dict(a.meta or {})
        index = meta.get("frame_index")
        info = per_frame.get(int(index)) if isinstance(index, int) else None
        distance = meta.get("score")
        if distance is None and info is not None:
            distance = info.get("distance")
        notes: list[str] = []
        good = True
        if info is not None and info.get("duplicate_of") is not None:
            notes.append(t("same as frame {index}", index=info["duplicate_of"]))
        if info is not None and info.get("quality") not in (None, "quality_ok"):
            notes.append(check_reason(t, str(info["quality"]), str(info["quality"]), {}))
            good = False
        if isinstance(distance, int | float) and threshold is not None:
            notes.append(score_sentence(t, "", float(distance), threshold, {"score_unit": "distance"}))
            if distance > threshold:
                notes.append(t("not a match on this frame"))
                good = False
        if isinstance(index, int) and index in fused:
            notes.append(t("used for the decision"))
        t_s = meta.get("t_s")
        cards.append(
            {
                "id": a.id,
                "t_s": t_s,
                "seek_s": round(max(float(t_s) - offset_s, 0.0), 2) if isinstance(t_s, int | float) else None,
                "display_w": meta.get("display_w", 240),
                "boxes": meta.get("boxes", []),
                "good": good,
                "caption": " · ".join(notes),
            }
        )
    return cards


def photo_cards(
    t: Translator,
    photos: Sequence[Artifact],
    reading: Mapping[str, Any] | None,
    checks: Sequence[CheckResultRecord],
    earlier: Mapping[str, Artifact],
    tz: ZoneInfo,
) -> list[dict[str, Any]]:
    """Breath photos with capture time, each photo's own findings and any earlier photo it repeats."""
    times = list((reading or {}).get("photo_times") or [])
    reuse = next((c for c in checks if c.kind.value == "photo_reuse"), None)
    matches: dict[str, dict[str, Any]] = {}
    if reuse is not None:
        for key in ("exact", "near"):
            for m in (reuse.details or {}).get(key, []):
                matches.setdefault(str(m.get("photo_id")), {**m, "exact": key == "exact"})
    cards = []
    for n, a in enumerate(photos):
        meta = dict(a.meta or {})
        index = meta.get("index", n)
        captured = meta.get("captured_at") or (
            times[index] if isinstance(index, int) and index < len(times) else None
        )
        findings = []
        for d in meta.get("checks", []):
            findings.append(
                {
                    "name": check_name(t, str(d.get("kind"))),
                    "outcome": d.get("outcome"),
                    "outcome_word": word(t, OUTCOME_WORDS, d.get("outcome")),
                    "reason": check_reason(
                        t, str(d.get("code")), str(d.get("message", "")), d.get("details") or {}
                    ),
                    "score": score_sentence(
                        t, str(d.get("outcome")), d.get("score"), d.get("threshold"), d.get("details") or {}
                    ),
                }
            )
        match = matches.get(a.id)
        earlier_card = None
        if match is not None:
            prior = earlier.get(str(match.get("earlier_photo_id")))
            earlier_card = {
                "id": prior.id if prior is not None else None,
                "session_id": prior.session_id if prior is not None else match.get("earlier_test_id"),
                "taken": local_time(prior.created_at, tz) if prior is not None else "—",
                "label": t("identical file")
                if match["exact"]
                else t("{bits} bits apart", bits=match.get("distance")),
            }
        cards.append(
            {
                "id": a.id,
                "number": n + 1,
                "captured": local_time(captured, tz) if captured else "—",
                "findings": findings,
                "earlier": earlier_card,
            }
        )
    return cards


def reading_rows(t: Translator, reading: Mapping[str, Any], tz: ZoneInfo) -> list[tuple[str, str]]:
    """The signed reading as (label, value) rows, times in the person's zone."""
    rows: list[tuple[str, str]] = []
    seen = set()
    for key, label in READING_FIELDS:
        if key in reading:
            seen.add(key)
            value = reading[key]
            if key in ("blow_start", "blow_end", "timestamp"):
                value = local_time(str(value), tz)
            rows.append((t(label), str(value)))
    if "photo_times" in reading:
        seen.add("photo_times")
        rows.append((t("Photos taken"), ", ".join(local_time(str(v), tz) for v in reading["photo_times"])))
    rows.extend((key, str(value)) for key, value in reading.items() if key not in seen)
    return rows


def day_outcomes(rows: Iterable[tuple[datetime, str]], tz: ZoneInfo) -> dict[str, dict[str, int]]:
    """Per local day (YYYY-MM-DD), how many sessions ended with each decision."""
    out: dict[str, dict[str, int]] = {}
    for ts, decision in rows:
        day = ts.astimezone(tz).strftime("%Y-%m-%d")
        counts = out.setdefault(day, {"pass": 0, "fail": 0, "review": 0})
        counts[decision] = counts.get(decision, 0) + 1
    return dict(sorted(out.items()))


# Weekday abbreviations, Monday = 0 (the numbering of schedule rules).
WEEKDAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
_WORKDAYS = (0, 1, 2, 3, 4)


def _days(t: Translator, days: Sequence[int]) -> str:
    if tuple(days) == ALL_DAYS:
        return t("every day")
    if tuple(days) == _WORKDAYS:
        return t("Monday to Friday")
    return ", ".join(t(WEEKDAYS[d]) for d in days)


def schedule_words(t: Translator, rule: Mapping[str, Any], zone_name: str) -> str:
    """A stored schedule rule in words, its times local to `zone_name` (the person's zone).

    "every day, window 09:00–10:00; local time, Europe/Moscow"; "random tests a week: 3, ..."
    """
    try:
        parsed = parse_rule(dict(rule))
    except ValueError:  # pydantic's ValidationError is one; a rule the scheduler would refuse too
        return t("The rule cannot be read.")
    where = t("local time, {zone}", zone=zone_name)
    if isinstance(parsed, DailyRule):
        text = t(
            "{days}, window {start}–{end}",
            days=_days(t, parsed.days),
            start=parsed.start.strftime("%H:%M"),
            end=parsed.end.strftime("%H:%M"),
        )
        if parsed.end <= parsed.start:
            text += " " + t("(ends the next day)")
        return f"{text}; {where}"
    if isinstance(parsed, RandomRule):
        text = t(
            "random tests a week: {n}, {minutes} min each, between {earliest} and {latest}",
            n=parsed.per_week,
            minutes=parsed.duration_min,
            earliest=parsed.earliest.strftime("%H:%M"),
            latest=parsed.latest.strftime("%H:%M"),
        )
        if tuple(parsed.days) != ALL_DAYS:
            text += "; " + _days(t, parsed.days)
        return f"{text}; {where}"
    return t("on demand: an officer asks for each test")
