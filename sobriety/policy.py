"""Reading policy per court order and the retest state machine.

A scheduled test opens an `Episode` (state DUE). A reading at or above the order's limit on the first
(screening) test is not yet a violation: after a deprivation period (15-20 min, so mouth alcohol cannot
inflate the result) a confirmatory test decides. A confirmed positive starts "test to zero": retests at an
interval until a reading falls below the zero threshold, documenting the decline. A test not taken by
the end of its window plus late grace is missed; one taken in the grace period is late.

`next_state` is pure: the service loads the episode, calls it with an event (a reading's classification
or a timer tick) and performs the returned actions (store the result, ask the station for a retest,
notify the officer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from identity.checks import CheckKind, CheckResult, Outcome
from sobriety.config import SobrietySettings
from sobriety.units import AlcoholUnit, convert

# Readings and limits are decimals of at most 3-4 places; conversions through mg/L leave float noise far
# below the device resolution (0.001), which must not flip "at the limit" to "below".
_FLOAT_TOLERANCE = 1e-9


class TestStage(StrEnum):
    """Which kind of test a reading is judged as."""

    __test__ = False  # not a pytest class

    SCREENING = "screening"
    CONFIRMATORY = "confirmatory"
    TEST_TO_ZERO = "test_to_zero"


@dataclass(frozen=True, slots=True)
class OrderLimit:
    """The alcohol limit a court order sets, in the order's own unit (readings are converted to it)."""

    limit: float
    unit: AlcoholUnit

    def __post_init__(self) -> None:
        if not self.limit >= 0.0:
            raise ValueError("an order's alcohol limit must be >= 0")

    @classmethod
    def default(cls, settings: SobrietySettings) -> OrderLimit:
        """The limit used when an order names none (`default_limit_g_210l`)."""
        return cls(settings.default_limit_g_210l, AlcoholUnit.G_210L)


def evaluate_reading(
    brac: float, unit: AlcoholUnit, order: OrderLimit, stage: TestStage, settings: SobrietySettings
) -> CheckResult:
    """Judge one valid reading against the order: PASS below; at or above, by stage.

    Screening positive -> INCONCLUSIVE (confirmatory required); confirmatory positive -> FAIL; during
    test-to-zero the limit is `zero_threshold_g_210l` and a reading at or above it is FAIL (still positive).
    `score` is the reading in the order's unit and `threshold` the limit it was judged under.
    """
    ratio = settings.partition_ratio
    value = convert(brac, unit, order.unit, ratio)
    limit = order.limit
    if stage is TestStage.TEST_TO_ZERO:
        limit = convert(settings.zero_threshold_g_210l, AlcoholUnit.G_210L, order.unit, ratio)
    details = {
        "score_unit": order.unit.value,
        "stage": stage.value,
        "brac": brac,
        "brac_unit": unit.value,
        "partition_ratio": ratio,
    }
    # A zero reading is negative even under an absolute-zero (limit 0) order.
    if value < limit - _FLOAT_TOLERANCE or value <= 0.0:
        code = "returned_to_zero" if stage is TestStage.TEST_TO_ZERO else "below_limit"
        return CheckResult(
            CheckKind.BREATH_READING,
            Outcome.PASS,
            code,
            f"Reading {value:.3f} {order.unit.value} is below the limit {limit:.3f}.",
            score=value,
            threshold=limit,
            details=details,
        )
    if stage is TestStage.SCREENING:
        return CheckResult(
            CheckKind.BREATH_READING,
            Outcome.INCONCLUSIVE,
            "screening_positive",
            f"Screening reading {value:.3f} {order.unit.value} is at or above the limit "
            f"{limit:.3f}; a confirmatory test is required after "
            f"{settings.deprivation_s // 60} minutes.",
            score=value,
            threshold=limit,
            details=details,
        )
    code = "still_positive" if stage is TestStage.TEST_TO_ZERO else "confirmed_positive"
    return CheckResult(
        CheckKind.BREATH_READING,
        Outcome.FAIL,
        code,
        f"{stage.value.replace('_', ' ').capitalize()} reading {value:.3f} {order.unit.value} "
        f"is at or above the limit {limit:.3f}.",
        score=value,
        threshold=limit,
        details=details,
    )


class RetestState(StrEnum):
    """Where a test episode stands. Stored values are stable."""

    DUE = "due"  # scheduled test open (window, then late grace)
    DEPRIVATION = "deprivation"  # positive screening; waiting before the confirmatory test
    CONFIRMATORY_DUE = "confirmatory_due"  # confirmatory test may be taken now
    TEST_TO_ZERO = "test_to_zero"  # confirmed positive; retesting until below zero threshold
    NEGATIVE = "negative"  # closed: negative (screening, or confirmatory after a positive screening)
    POSITIVE = "positive"  # closed: confirmed positive, test to zero finished or given up
    MISSED = "missed"  # closed: the scheduled test was not taken
    UNCONFIRMED = "unconfirmed"  # closed: positive screening, confirmatory not taken

    @property
    def closed(self) -> bool:
        """True for terminal states."""
        return self in _CLOSED


_CLOSED = frozenset({RetestState.NEGATIVE, RetestState.POSITIVE, RetestState.MISSED, RetestState.UNCONFIRMED})


class EventKind(StrEnum):
    """What happened to an episode."""

    NEGATIVE = "negative"  # a valid reading below the stage's limit
    POSITIVE = "positive"  # a valid reading at or above the stage's limit
    REJECTED = "rejected"  # a submission rejected for a technical reason (retake)
    TICK = "tick"  # time passed


@dataclass(frozen=True, slots=True)
class RetestEvent:
    """An event; `at` is the reading's timestamp (or the tick time)."""

    kind: EventKind
    at: datetime


class ActionKind(StrEnum):
    """What the service must do after a transition."""

    RECORD_RESULT = "record_result"  # book the episode's result with `outcome`
    REQUEST_TEST = "request_test"  # ask the station/person for a test of `stage` at `at`
    NOTIFY_OFFICER = "notify_officer"
    IGNORE_READING = "ignore_reading"  # keep the reading as evidence but do not use it in the episode


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the service must do; `code` is stable, `message` readable."""

    kind: ActionKind
    code: str
    message: str
    outcome: Outcome | None = None
    at: datetime | None = None
    stage: TestStage | None = None


@dataclass(frozen=True, slots=True)
class Episode:
    """One scheduled test and its retests.

    `due_at`..`window_end` is when the next expected test may be taken; `positive_at` is the first positive
    screening; `late` marks a test taken in the late grace period.
    """

    state: RetestState
    scheduled_at: datetime
    due_at: datetime
    window_end: datetime
    positive_at: datetime | None = None
    confirmed_at: datetime | None = None
    late: bool = False


def open_episode(due_at: datetime, settings: SobrietySettings) -> Episode:
    """A new episode for a test scheduled at `due_at` (aware datetime)."""
    return Episode(RetestState.DUE, due_at, due_at, due_at + timedelta(seconds=settings.test_window_s))


def expected_stage(episode: Episode) -> TestStage:
    """The stage a reading received now is judged as."""
    if episode.state in (RetestState.DEPRIVATION, RetestState.CONFIRMATORY_DUE):
        return TestStage.CONFIRMATORY
    if episode.state is RetestState.TEST_TO_ZERO:
        return TestStage.TEST_TO_ZERO
    return TestStage.SCREENING


def event_for(check: CheckResult, at: datetime) -> RetestEvent:
    """The event a reading's `evaluate_reading` result feeds into `next_state`."""
    if check.outcome is Outcome.PASS:
        return RetestEvent(EventKind.NEGATIVE, at)
    if check.outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE) and check.code in (
        "screening_positive",
        "confirmed_positive",
        "still_positive",
    ):
        return RetestEvent(EventKind.POSITIVE, at)
    return RetestEvent(EventKind.REJECTED, at)


def _advance(ep: Episode, now: datetime, s: SobrietySettings) -> tuple[Episode, list[Action]]:
    """Apply the transitions that time alone causes."""
    actions: list[Action] = []
    if ep.state is RetestState.DUE and now > ep.window_end + timedelta(seconds=s.late_grace_s):
        ep = replace(ep, state=RetestState.MISSED)
        actions += [
            Action(
                ActionKind.RECORD_RESULT,
                "missed_test",
                "The scheduled breath test was not taken.",
                outcome=Outcome.INCONCLUSIVE,
            ),
            Action(ActionKind.NOTIFY_OFFICER, "missed_test", "Scheduled breath test missed."),
        ]
    if ep.state is RetestState.DEPRIVATION and now >= ep.due_at:
        ep = replace(ep, state=RetestState.CONFIRMATORY_DUE)
    if ep.state is RetestState.CONFIRMATORY_DUE and now > ep.window_end:
        ep = replace(ep, state=RetestState.UNCONFIRMED)
        actions += [
            Action(
                ActionKind.RECORD_RESULT,
                "confirmatory_missed",
                "Positive screening was not followed by a confirmatory test.",
                outcome=Outcome.INCONCLUSIVE,
            ),
            Action(ActionKind.NOTIFY_OFFICER, "confirmatory_missed", "Confirmatory breath test missed."),
        ]
    if ep.state is RetestState.TEST_TO_ZERO and now > ep.window_end:
        ep = replace(ep, state=RetestState.POSITIVE)
        actions.append(
            Action(
                ActionKind.NOTIFY_OFFICER,
                "test_to_zero_incomplete",
                "No reading below zero before the test-to-zero limit.",
            )
        )
    return ep, actions


def next_state(
    episode: Episode, event: RetestEvent, now: datetime, settings: SobrietySettings
) -> tuple[Episode, list[Action]]:
    """Pure transition: the episode after `event` at `now`, and the actions the service must take.

    Time-driven transitions (missed, deprivation over, confirmatory missed, test-to-zero given up) are
    applied first, up to the event's time for readings and up to `now` for ticks.
    """
    s = settings
    when = now if event.kind is EventKind.TICK else event.at
    ep, actions = _advance(episode, when, s)
    if event.kind is EventKind.TICK:
        return ep, actions
    if ep.state.closed:
        return ep, actions + [
            Action(
                ActionKind.IGNORE_READING,
                "episode_closed",
                f"Episode already {ep.state.value}; reading kept as evidence only.",
            )
        ]
    if event.kind is EventKind.REJECTED:
        return ep, actions + [
            Action(
                ActionKind.REQUEST_TEST,
                "retake",
                "Submission rejected; please retest.",
                at=now,
                stage=expected_stage(ep),
            )
        ]

    positive = event.kind is EventKind.POSITIVE
    t = event.at
    if ep.state is RetestState.DUE:
        if t < ep.due_at:
            return ep, actions + [
                Action(ActionKind.IGNORE_READING, "not_due", "Reading taken before the test window opened.")
            ]
        late = t > ep.window_end
        if late:
            actions.append(
                Action(ActionKind.NOTIFY_OFFICER, "late_test", "Breath test taken after its window.")
            )
        if not positive:
            return replace(ep, state=RetestState.NEGATIVE, late=late), actions + [
                Action(
                    ActionKind.RECORD_RESULT,
                    "negative_late" if late else "negative",
                    "Screening test negative.",
                    outcome=Outcome.PASS,
                )
            ]
        due = t + timedelta(seconds=s.deprivation_s)
        ep = replace(
            ep,
            state=RetestState.DEPRIVATION,
            positive_at=t,
            due_at=due,
            window_end=due + timedelta(seconds=s.confirmatory_window_s),
            late=late,
        )
        return ep, actions + [
            Action(
                ActionKind.REQUEST_TEST,
                "confirmatory_required",
                f"Positive screening: confirmatory test due in {s.deprivation_s // 60} min.",
                at=due,
                stage=TestStage.CONFIRMATORY,
            )
        ]

    if ep.state is RetestState.DEPRIVATION:
        return ep, actions + [
            Action(
                ActionKind.IGNORE_READING,
                "deprivation_not_over",
                "Confirmatory test taken before the deprivation period ended; retest later.",
                at=ep.due_at,
                stage=TestStage.CONFIRMATORY,
            )
        ]

    if ep.state is RetestState.CONFIRMATORY_DUE:
        if not positive:
            return replace(ep, state=RetestState.NEGATIVE), actions + [
                Action(
                    ActionKind.RECORD_RESULT,
                    "screening_not_confirmed",
                    "Confirmatory test negative; the positive screening is not confirmed.",
                    outcome=Outcome.PASS,
                )
            ]
        due = t + timedelta(seconds=s.test_to_zero_interval_s)
        ep = replace(
            ep,
            state=RetestState.TEST_TO_ZERO,
            confirmed_at=t,
            due_at=due,
            window_end=t + timedelta(seconds=s.test_to_zero_max_s),
        )
        return ep, actions + [
            Action(
                ActionKind.RECORD_RESULT,
                "confirmed_positive",
                "Confirmatory test positive.",
                outcome=Outcome.FAIL,
            ),
            Action(ActionKind.NOTIFY_OFFICER, "confirmed_positive", "Confirmed positive breath test."),
            Action(
                ActionKind.REQUEST_TEST,
                "test_to_zero",
                "Retest to document the return to zero.",
                at=due,
                stage=TestStage.TEST_TO_ZERO,
            ),
        ]

    # TEST_TO_ZERO: any reading counts, early or not.
    if not positive:
        return replace(ep, state=RetestState.POSITIVE), actions + [
            Action(ActionKind.NOTIFY_OFFICER, "returned_to_zero", "Breath alcohol back below zero threshold.")
        ]
    due = t + timedelta(seconds=s.test_to_zero_interval_s)
    return replace(ep, due_at=due), actions + [
        Action(
            ActionKind.REQUEST_TEST,
            "test_to_zero",
            "Still positive; retest later.",
            at=due,
            stage=TestStage.TEST_TO_ZERO,
        )
    ]
