"""When checks are due: schedule rules and their windows in the person's time zone (pure, no database).

A rule is stored as JSON in `schedules.rule` and read in `schedules.timezone` (the person's zone,
"Asia/Almaty" = UTC+5 since 2024-03-01; tzdata 2024a or newer is needed, the `tzdata` package ships it
where the system's zoneinfo is older). Three kinds:

- daily: `{"type": "daily", "start": "09:00", "end": "10:00", "days": [0, 1, 2, 3, 4]}`, weekdays
  Monday = 0; an end at or before the start means the window runs past midnight.
- random: `{"type": "random", "per_week": 3, "earliest": "08:00", "latest": "21:00", "duration_min": 30}`:
  `per_week` windows in every ISO week (local), placed by a generator seeded with an HMAC of the
  service secret, the schedule id and the week, so the server always recomputes the same windows but
  the person cannot predict them.
- on_demand: `{"type": "on_demand"}`: no windows of its own; an officer calls `request_on_demand`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.resources
import json
import logging
import math
import random
import uuid
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

log = logging.getLogger(__name__)

# Token prefix of check-in links ("ck_..."), see media_server.tokens.new_secret_token.
CHECKIN_TOKEN_PREFIX = "ck"
# Audit actor of everything the scheduler tick does.
SCHEDULER_ACTOR = "scheduler"
# Namespace of the deterministic session ids (uuid5 of schedule id + window start): two ticks racing
# on the same window insert the same primary key, so one of them fails and nothing is doubled.
SESSION_ID_NAMESPACE = uuid.UUID("6b757a65-7400-4000-8000-7363686564ff")
# Domain-separation label of the random-rule seed key derived from the service secret.
_SEED_LABEL = b"kuzet/schedules/random-seed/v1"
_DAY_MINUTES = 24 * 60
ALL_DAYS = (0, 1, 2, 3, 4, 5, 6)


class RuleType(StrEnum):
    """Kinds of schedule rule. Stored values are stable."""

    DAILY = "daily"
    RANDOM = "random"
    ON_DEMAND = "on_demand"


def _parse_hhmm(value: object) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError("a time of day is written 'HH:MM'")
    try:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))
    except ValueError as exc:
        raise ValueError(f"not a time of day 'HH:MM': {value!r}") from exc


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_days(days: tuple[int, ...]) -> tuple[int, ...]:
    if not days:
        raise ValueError("at least one weekday is needed")
    if any(d < 0 or d > 6 for d in days):
        raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
    return tuple(sorted(set(days)))


class DailyRule(_Rule):
    """A fixed window on chosen weekdays, local time; end <= start runs past midnight."""

    type: Literal[RuleType.DAILY] = RuleType.DAILY
    start: time = Field(description="Local start of the window, 'HH:MM'.")
    end: time = Field(description="Local end of the window, 'HH:MM'.")
    days: tuple[int, ...] = Field(ALL_DAYS, description="Weekdays the window applies to, Monday = 0.")

    _hhmm = field_validator("start", "end", mode="before")(_parse_hhmm)
    _days = field_validator("days")(_check_days)


class RandomRule(_Rule):
    """`per_week` unannounced windows of `duration_min` between `earliest` and `latest` each local day."""

    type: Literal[RuleType.RANDOM] = RuleType.RANDOM
    per_week: int = Field(ge=1, le=28, description="Windows in each ISO week (local).")
    earliest: time = Field(description="No window starts before this local time, 'HH:MM'.")
    latest: time = Field(description="Every window ends by this local time, 'HH:MM'.")
    duration_min: int = Field(ge=5, le=240, description="Length of each window in minutes.")
    days: tuple[int, ...] = Field(ALL_DAYS, description="Weekdays windows may fall on, Monday = 0.")

    _hhmm = field_validator("earliest", "latest", mode="before")(_parse_hhmm)
    _days = field_validator("days")(_check_days)

    @model_validator(mode="after")
    def _fits(self) -> RandomRule:
        span = _minutes(self.latest) - _minutes(self.earliest)
        per_day = math.ceil(self.per_week / len(self.days))
        if span < per_day * self.duration_min:
            raise ValueError(
                f"{self.per_week} windows of {self.duration_min} min a week on {len(self.days)} day(s) "
                f"do not fit between {self.earliest:%H:%M} and {self.latest:%H:%M}"
            )
        return self


class OnDemandRule(_Rule):
    """No windows of its own: tests are requested by an officer (`request_on_demand`)."""

    type: Literal[RuleType.ON_DEMAND] = RuleType.ON_DEMAND


Rule = Annotated[DailyRule | RandomRule | OnDemandRule, Field(discriminator="type")]


AnyRule = DailyRule | RandomRule | OnDemandRule
_RULE_ADAPTER: TypeAdapter[AnyRule] = TypeAdapter(Rule)


def parse_rule(data: dict[str, Any] | AnyRule) -> AnyRule:
    """Validate a stored JSON rule (pydantic ValidationError, a ValueError, when malformed)."""
    if isinstance(data, DailyRule | RandomRule | OnDemandRule):
        return data
    return _RULE_ADAPTER.validate_python(data)


def rule_to_json(rule: AnyRule) -> dict[str, Any]:
    """The JSON form stored in `schedules.rule` (times as 'HH:MM')."""
    data: dict[str, Any] = rule.model_dump(mode="json")
    for name in ("start", "end", "earliest", "latest"):
        if name in data:
            data[name] = data[name][:5]
    return data


class Window(NamedTuple):
    """One due window, aware UTC datetimes, start < end."""

    start: datetime
    end: datetime


def derive_seed_key(service_secret: bytes) -> bytes:
    """The key that seeds random rules, derived from the service secret (never the secret itself)."""
    return hmac.new(service_secret, _SEED_LABEL, hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The zone `name`, from the `tzdata` package when installed, else from the system's zoneinfo.

    zoneinfo itself prefers the system's files, which can be older than 2024a and still put
    Kazakhstan at UTC+6; the pinned package gives every node the same rules.
    """
    if "/" in name and ".." not in name:
        try:
            area, _, city = name.rpartition("/")
            ref = importlib.resources.files("tzdata.zoneinfo").joinpath(*area.split("/"), city)
            with ref.open("rb") as src:
                return ZoneInfo.from_file(src, key=name)
        except (ModuleNotFoundError, FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
            pass
    return ZoneInfo(name)


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else zone(tz)


def _local_to_utc(day: date, minute_of_day: int, tz: ZoneInfo) -> datetime:
    day = day + timedelta(days=minute_of_day // _DAY_MINUTES)
    minute_of_day %= _DAY_MINUTES
    local = datetime.combine(day, time(minute_of_day // 60, minute_of_day % 60), tzinfo=tz)
    return local.astimezone(UTC)


def _week_plan(rule: RandomRule, monday: date, schedule_id: str, seed_key: bytes) -> dict[date, list[int]]:
    """Start minutes of every window in the ISO week starting `monday`, by local date."""
    iso_year, iso_week, _ = monday.isocalendar()
    message = f"{schedule_id}|{iso_year}-W{iso_week:02d}|{json.dumps(rule_to_json(rule), sort_keys=True)}"
    seed = hmac.new(seed_key, message.encode(), hashlib.sha256).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    per_day = math.ceil(rule.per_week / len(rule.days))
    picked = rng.sample([d for d in rule.days for _ in range(per_day)], rule.per_week)
    earliest = _minutes(rule.earliest)
    span = _minutes(rule.latest) - earliest
    plan: dict[date, list[int]] = {}
    for weekday in sorted(set(picked)):
        count = picked.count(weekday)
        free = span - count * rule.duration_min
        # Sorted offsets in [0, free], then each window pushed past the ones before it: uniform over
        # all non-overlapping placements, never overlapping.
        offsets = sorted(rng.randint(0, free) for _ in range(count))
        plan[monday + timedelta(days=weekday)] = [
            earliest + off + i * rule.duration_min for i, off in enumerate(offsets)
        ]
    return plan


def due_windows(
    rule: AnyRule | dict[str, Any],
    tz: ZoneInfo | str,
    day: date,
    *,
    schedule_id: str = "",
    seed_key: bytes = b"",
) -> list[Window]:
    """Windows that start on local date `day` in zone `tz`, as UTC, sorted by start.

    Random rules are a function of (seed_key, schedule_id, ISO week, rule): pass the same values to get
    the same windows.
    """
    parsed = parse_rule(rule)
    zone = _zone(tz)
    if isinstance(parsed, DailyRule):
        if day.weekday() not in parsed.days:
            return []
        start, end = _minutes(parsed.start), _minutes(parsed.end)
        if end <= start:
            end += _DAY_MINUTES
        return [Window(_local_to_utc(day, start, zone), _local_to_utc(day, end, zone))]
    if isinstance(parsed, RandomRule):
        monday = day - timedelta(days=day.weekday())
        starts = _week_plan(parsed, monday, schedule_id, seed_key).get(day, [])
        return [
            Window(_local_to_utc(day, s, zone), _local_to_utc(day, s + parsed.duration_min, zone))
            for s in starts
        ]
    return []


def windows_between(
    rule: AnyRule | dict[str, Any],
    tz: ZoneInfo | str,
    start: datetime,
    end: datetime,
    *,
    schedule_id: str = "",
    seed_key: bytes = b"",
) -> list[Window]:
    """Windows (UTC) that overlap [start, end), for aware datetimes `start` <= `end`."""
    zone = _zone(tz)
    parsed = parse_rule(rule)
    # A window starting the local day before `start` can still be open (past midnight).
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date()
    out: list[Window] = []
    while day <= last:
        out += [
            w
            for w in due_windows(parsed, zone, day, schedule_id=schedule_id, seed_key=seed_key)
            if w.end > start and w.start < end
        ]
        day += timedelta(days=1)
    return sorted(out)


def on_demand_window(now: datetime, duration: timedelta) -> Window:
    """A window for an officer's on-demand test: it opens now."""
    return Window(now.astimezone(UTC), now.astimezone(UTC) + duration)
