"""Reading policy per order and the retest state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from identity.checks import Outcome
from sobriety.config import SobrietySettings
from sobriety.policy import (
    ActionKind,
    EventKind,
    OrderLimit,
    RetestEvent,
    RetestState,
    TestStage,
    evaluate_reading,
    event_for,
    expected_stage,
    next_state,
    open_episode,
)
from sobriety.units import AlcoholUnit

S = SobrietySettings()
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
ORDER = OrderLimit(0.02, AlcoholUnit.G_210L)


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_below_limit_passes_above_fails_on_confirmatory() -> None:
    below = evaluate_reading(0.015, AlcoholUnit.G_210L, ORDER, TestStage.CONFIRMATORY, S)
    assert below.outcome is Outcome.PASS and below.code == "below_limit" and below.threshold == 0.02
    at = evaluate_reading(0.02, AlcoholUnit.G_210L, ORDER, TestStage.CONFIRMATORY, S)
    assert at.outcome is Outcome.FAIL and at.code == "confirmed_positive"
    assert evaluate_reading(
        0.0, AlcoholUnit.G_210L, OrderLimit(0.0, AlcoholUnit.G_210L), TestStage.SCREENING, S
    ).passed


def test_positive_screening_requires_confirmatory() -> None:
    r = evaluate_reading(0.05, AlcoholUnit.G_210L, ORDER, TestStage.SCREENING, S)
    assert r.outcome is Outcome.INCONCLUSIVE and r.code == "screening_positive"
    assert "confirmatory" in r.message


def test_order_in_other_units() -> None:
    # Order: 0.25 mg/L breath; reading in g/210L: 0.06 g/210L = 0.2857 mg/L -> at/above.
    mgl = OrderLimit(0.25, AlcoholUnit.MG_L)
    r = evaluate_reading(0.06, AlcoholUnit.G_210L, mgl, TestStage.CONFIRMATORY, S)
    assert r.outcome is Outcome.FAIL and r.score == pytest.approx(0.2857, abs=1e-4)
    # Order: 0.5 permille blood; 0.2 mg/L breath -> 0.42 permille at 2100:1 -> below.
    pm = OrderLimit(0.5, AlcoholUnit.PERMILLE)
    assert evaluate_reading(0.2, AlcoholUnit.MG_L, pm, TestStage.CONFIRMATORY, S).passed
    # Exactly at a limit stated in another unit stays "at" despite float noise.
    assert not evaluate_reading(0.25 * 210 / 1000, AlcoholUnit.G_210L, mgl, TestStage.CONFIRMATORY, S).passed
    with pytest.raises(ValueError):
        OrderLimit(-0.01, AlcoholUnit.G_210L)


def kinds(actions) -> list[tuple[ActionKind, str]]:
    return [(a.kind, a.code) for a in actions]


def test_negative_screening_closes_episode() -> None:
    ep = open_episode(T0, S)
    assert ep.state is RetestState.DUE and expected_stage(ep) is TestStage.SCREENING
    ep2, actions = next_state(ep, RetestEvent(EventKind.NEGATIVE, T0 + sec(60)), T0 + sec(61), S)
    assert ep2.state is RetestState.NEGATIVE
    assert kinds(actions) == [(ActionKind.RECORD_RESULT, "negative")]
    assert actions[0].outcome is Outcome.PASS


def test_positive_screening_then_deprivation_then_confirmatory() -> None:
    ep = open_episode(T0, S)
    t = T0 + sec(120)
    ep, actions = next_state(ep, RetestEvent(EventKind.POSITIVE, t), t, S)
    assert ep.state is RetestState.DEPRIVATION and expected_stage(ep) is TestStage.CONFIRMATORY
    (req,) = actions
    assert req.kind is ActionKind.REQUEST_TEST and req.stage is TestStage.CONFIRMATORY
    assert req.at == t + sec(S.deprivation_s)
    # Too early: the reading is kept but not used.
    early = t + sec(S.deprivation_s - 60)
    ep_e, actions = next_state(ep, RetestEvent(EventKind.NEGATIVE, early), early, S)
    assert ep_e.state is RetestState.DEPRIVATION
    assert kinds(actions) == [(ActionKind.IGNORE_READING, "deprivation_not_over")]
    # A tick after the deprivation period opens the confirmatory window.
    ep_t, _ = next_state(ep, RetestEvent(EventKind.TICK, t), t + sec(S.deprivation_s), S)
    assert ep_t.state is RetestState.CONFIRMATORY_DUE
    # Negative confirmatory: screening not confirmed -> PASS.
    tc = t + sec(S.deprivation_s + 30)
    ep_n, actions = next_state(ep, RetestEvent(EventKind.NEGATIVE, tc), tc, S)
    assert ep_n.state is RetestState.NEGATIVE
    assert kinds(actions) == [(ActionKind.RECORD_RESULT, "screening_not_confirmed")]
    # Positive confirmatory: FAIL, officer notified, test to zero until below the zero threshold.
    ep_p, actions = next_state(ep, RetestEvent(EventKind.POSITIVE, tc), tc, S)
    assert ep_p.state is RetestState.TEST_TO_ZERO and expected_stage(ep_p) is TestStage.TEST_TO_ZERO
    assert [a.outcome for a in actions if a.kind is ActionKind.RECORD_RESULT] == [Outcome.FAIL]
    assert (ActionKind.NOTIFY_OFFICER, "confirmed_positive") in kinds(actions)
    t2 = tc + sec(S.test_to_zero_interval_s)
    ep_p2, actions = next_state(ep_p, RetestEvent(EventKind.POSITIVE, t2), t2, S)
    assert ep_p2.state is RetestState.TEST_TO_ZERO and actions[0].at == t2 + sec(S.test_to_zero_interval_s)
    t3 = t2 + sec(S.test_to_zero_interval_s)
    ep_z, actions = next_state(ep_p2, RetestEvent(EventKind.NEGATIVE, t3), t3, S)
    assert ep_z.state is RetestState.POSITIVE
    assert kinds(actions) == [(ActionKind.NOTIFY_OFFICER, "returned_to_zero")]


def test_missed_late_and_unconfirmed() -> None:
    ep = open_episode(T0, S)
    grace_end = T0 + sec(S.test_window_s + S.late_grace_s)
    still, actions = next_state(ep, RetestEvent(EventKind.TICK, grace_end), grace_end, S)
    assert still.state is RetestState.DUE and actions == []
    missed, actions = next_state(ep, RetestEvent(EventKind.TICK, grace_end), grace_end + sec(1), S)
    assert missed.state is RetestState.MISSED
    assert actions[0].outcome is Outcome.INCONCLUSIVE and actions[0].code == "missed_test"
    # A reading after the episode closed is only evidence.
    _, actions = next_state(
        missed, RetestEvent(EventKind.NEGATIVE, grace_end + sec(5)), grace_end + sec(5), S
    )
    assert kinds(actions) == [(ActionKind.IGNORE_READING, "episode_closed")]
    # Late but inside grace: accepted and flagged.
    tl = T0 + sec(S.test_window_s + 60)
    late, actions = next_state(ep, RetestEvent(EventKind.NEGATIVE, tl), tl, S)
    assert late.state is RetestState.NEGATIVE and late.late
    assert (ActionKind.NOTIFY_OFFICER, "late_test") in kinds(actions)
    assert (ActionKind.RECORD_RESULT, "negative_late") in kinds(actions)
    # Positive screening never confirmed.
    dep, _ = next_state(ep, RetestEvent(EventKind.POSITIVE, T0), T0, S)
    gone = T0 + sec(S.deprivation_s + S.confirmatory_window_s + 1)
    unc, actions = next_state(dep, RetestEvent(EventKind.TICK, gone), gone, S)
    assert unc.state is RetestState.UNCONFIRMED
    assert (ActionKind.RECORD_RESULT, "confirmatory_missed") in kinds(actions)


def test_rejected_submission_asks_for_retake_and_events_from_checks() -> None:
    ep = open_episode(T0, S)
    same, actions = next_state(ep, RetestEvent(EventKind.REJECTED, T0 + sec(5)), T0 + sec(5), S)
    assert same == ep and kinds(actions) == [(ActionKind.REQUEST_TEST, "retake")]
    pos = evaluate_reading(0.1, AlcoholUnit.G_210L, ORDER, TestStage.SCREENING, S)
    assert event_for(pos, T0).kind is EventKind.POSITIVE
    assert event_for(evaluate_reading(0.0, AlcoholUnit.G_210L, ORDER, TestStage.SCREENING, S), T0).kind is (
        EventKind.NEGATIVE
    )
