"""Active-liveness checks on per-frame measures: head turn, blink, mouth/speech synchrony. Pure numpy.

Series are 1-D float arrays aligned with 1-D timestamp arrays in seconds on one clock (the session's);
NaN marks a frame without a face. Prompt times are on the same clock.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, Outcome
from identity.liveness.config import LivenessSettings

Series = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


class TurnDirection(StrEnum):
    """Which way the person is asked to turn, in their own frame (left = their left)."""

    LEFT = "left"
    RIGHT = "right"


def _arrays(values: Series, ts: Series) -> tuple[FloatArray, FloatArray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    t = np.asarray(ts, dtype=np.float64).ravel()
    if v.shape != t.shape:
        raise ValueError(f"series and timestamps differ in length: {v.shape} vs {t.shape}")
    return v, t


def _result(
    kind: CheckKind,
    outcome: Outcome,
    code: str,
    message: str,
    score: float | None = None,
    threshold: float | None = None,
    **details: object,
) -> CheckResult:
    return CheckResult(
        kind=kind,
        outcome=outcome,
        code=code,
        message=message,
        score=score,
        threshold=threshold,
        details=details,
    )


def _too_few(kind: CheckKind, what: str, **details: object) -> CheckResult:
    return _result(
        kind,
        Outcome.INCONCLUSIVE,
        "too_few_frames",
        f"Too few frames showed a face {what}; could not tell.",
        None,
        None,
        **details,
    )


def check_head_turn(
    yaw_series: Series,
    timestamps: Series,
    prompt_time: float,
    direction: TurnDirection,
    settings: LivenessSettings,
    *,
    window_s: float | None = None,
) -> CheckResult:
    """Did the head turn `direction` by at least head_turn_min_deg within the window after the prompt?

    yaw_series: degrees per frame, positive = the person's own left (see landmarks.yaw_deg); the change is
    measured against the median yaw of the `baseline_s` before the prompt, so a head already turned does
    not count. The first excursion of head_turn_first_deg decides the direction: a turn the other way
    first fails (or, when it stays below the minimum turn, goes to review), even if the prompted turn
    follows. window_s defaults to settings.motion_window_s.
    """
    yaw, t = _arrays(yaw_series, timestamps)
    window = settings.motion_window_s if window_s is None else window_s
    face = np.isfinite(yaw)
    base_mask = face & (t >= prompt_time - settings.baseline_s) & (t < prompt_time + settings.min_reaction_s)
    resp_mask = face & (t >= prompt_time + settings.min_reaction_s) & (t <= prompt_time + window)
    common = {
        "direction": direction.value,
        "prompt_ts": prompt_time,
        "window_s": window,
        "score_unit": "degrees",
    }
    if not base_mask.any():
        return _too_few(CheckKind.LIVENESS, "before the prompt", **common)
    if resp_mask.sum() < settings.min_face_frames:
        return _too_few(CheckKind.LIVENESS, "after the prompt", frames=int(resp_mask.sum()), **common)
    sign = 1.0 if direction is TurnDirection.LEFT else -1.0
    baseline = float(np.median(yaw[base_mask]))
    change = sign * (yaw[resp_mask] - baseline)
    best = float(change.max())
    opposite = float((-change).max())
    thr = settings.head_turn_min_deg
    details = {**common, "baseline_deg": round(baseline, 2), "frames": int(resp_mask.sum())}
    # The first clear excursion from the baseline is the response: a recording that swings the head
    # both ways in every window must not pass whichever way it is asked to turn.
    moved = np.flatnonzero(np.abs(change) >= settings.head_turn_first_deg)
    if moved.size and change[moved[0]] < 0 and opposite >= thr:
        return _result(
            CheckKind.LIVENESS,
            Outcome.FAIL,
            "wrong_direction",
            "The head turned the other way first.",
            best,
            thr,
            opposite_deg=round(opposite, 2),
            first_move_s=round(float(t[resp_mask][moved[0]]) - prompt_time, 3),
            **details,
        )
    if moved.size and change[moved[0]] < 0 and best >= thr:
        return _result(
            CheckKind.LIVENESS,
            Outcome.INCONCLUSIVE,
            "direction_unclear",
            "The head moved the other way before turning as asked.",
            best,
            thr,
            opposite_deg=round(opposite, 2),
            **details,
        )
    if best >= thr:
        first = float(t[resp_mask][np.argmax(change >= thr)])
        return _result(
            CheckKind.LIVENESS,
            Outcome.PASS,
            "head_turn",
            "Head turn seen.",
            best,
            thr,
            response_latency_s=round(first - prompt_time, 3),
            **details,
        )
    if best >= thr - settings.head_turn_review_deg:
        return _result(
            CheckKind.LIVENESS,
            Outcome.INCONCLUSIVE,
            "head_turn_borderline",
            "The head turn was too small to be sure.",
            best,
            thr,
            **details,
        )
    if opposite >= thr:
        return _result(
            CheckKind.LIVENESS,
            Outcome.FAIL,
            "wrong_direction",
            "The head turned the other way.",
            best,
            thr,
            opposite_deg=round(opposite, 2),
            **details,
        )
    fps = float(resp_mask.sum()) / max(window - settings.min_reaction_s, 1e-6)
    if fps < settings.min_fps_no_turn:
        # Absence of a turn is only evidence when the window was seen densely enough to catch a quick one.
        return _result(
            CheckKind.LIVENESS,
            Outcome.INCONCLUSIVE,
            "frame_rate_too_low",
            "Too few frames to tell whether the head turned; could not tell.",
            best,
            thr,
            fps=round(fps, 2),
            **details,
        )
    return _result(
        CheckKind.LIVENESS,
        Outcome.FAIL,
        "no_head_turn",
        "No head turn followed the prompt.",
        best,
        thr,
        **details,
    )


def check_blink(
    ear_series: Series,
    timestamps: Series,
    prompt_time: float,
    settings: LivenessSettings,
    *,
    window_s: float | None = None,
) -> CheckResult:
    """Did the eyes close and reopen within the window after the prompt?

    ear_series: eye aspect ratio per frame (landmarks.eye_aspect_ratio). The open-eye level is the 90th
    percentile of the baseline and response frames; the score is the deepest dip as a fraction of it.
    Needs min_fps_blink frames per second with a face, or it could not tell.
    """
    ear, t = _arrays(ear_series, timestamps)
    window = settings.motion_window_s if window_s is None else window_s
    face = np.isfinite(ear)
    around = face & (t >= prompt_time - settings.baseline_s) & (t <= prompt_time + window)
    resp_mask = face & (t >= prompt_time + settings.min_reaction_s) & (t <= prompt_time + window)
    n = int(resp_mask.sum())
    span = window - settings.min_reaction_s
    common: dict[str, object] = {
        "prompt_ts": prompt_time,
        "window_s": window,
        "frames": n,
        "score_unit": "EAR / open-eye EAR",
    }
    if n < settings.min_face_frames:
        return _too_few(CheckKind.LIVENESS, "after the prompt", **common)
    fps = n / span
    if fps < settings.min_fps_blink:
        return _result(
            CheckKind.LIVENESS,
            Outcome.INCONCLUSIVE,
            "frame_rate_too_low",
            "Too few frames to see a blink; could not tell.",
            None,
            None,
            fps=round(fps, 2),
            **common,
        )
    open_level = float(np.percentile(ear[around], 90))
    if open_level <= 0:
        return _too_few(CheckKind.LIVENESS, "with open eyes", **common)
    ratio = ear[resp_mask] / open_level
    thr = settings.blink_closed_ratio
    closed = np.flatnonzero(ratio <= thr)
    reopened = bool(closed.size) and bool((ratio[closed[0] :] >= settings.blink_reopen_ratio).any())
    deepest = float(ratio.min())
    details = {**common, "open_ear": round(open_level, 4)}
    if closed.size and reopened:
        first = float(t[resp_mask][closed[0]])
        return _result(
            CheckKind.LIVENESS,
            Outcome.PASS,
            "blink",
            "Blink seen.",
            deepest,
            thr,
            response_latency_s=round(first - prompt_time, 3),
            **details,
        )
    if deepest <= thr + settings.blink_review_ratio:
        code = "eyes_not_reopened" if closed.size else "blink_borderline"
        return _result(
            CheckKind.LIVENESS,
            Outcome.INCONCLUSIVE,
            code,
            "Could not tell whether the eyes blinked.",
            deepest,
            thr,
            **details,
        )
    return _result(
        CheckKind.LIVENESS, Outcome.FAIL, "no_blink", "No blink followed the prompt.", deepest, thr, **details
    )


def _resample(values: FloatArray, t: FloatArray, grid: FloatArray, smooth_s: float) -> FloatArray:
    """Values on `grid`: boxcar-averaged over smooth_s (audio is denser than the grid), then interpolated."""
    order = np.argsort(t)
    t, values = t[order], values[order]
    if t.size > 1 and smooth_s > 0:
        step = float(np.median(np.diff(t)))
        k = int(round(smooth_s / step)) if step > 0 else 1
        if k > 1:
            values = np.convolve(values, np.ones(k) / k, mode="same")
    return np.interp(grid, t, values)


def _best_lag_corr(a: FloatArray, b: FloatArray, max_lag: int) -> tuple[float, int]:
    best, best_lag = -1.0, 0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) : a.size + min(lag, 0)]
        y = b[max(-lag, 0) : b.size + min(-lag, 0)]
        if x.size < 3 or x.std() == 0 or y.std() == 0:
            continue
        c = float(np.corrcoef(x, y)[0, 1])
        if c > best:
            best, best_lag = c, lag
    return best, best_lag


def check_av_sync(
    mouth_series: Series,
    mouth_ts: Series,
    audio_energy_series: Series,
    audio_ts: Series,
    settings: LivenessSettings,
) -> CheckResult:
    """Does mouth opening follow speech energy? A still face with a played recording fails.

    mouth_series: landmarks.mouth_open_ratio per frame (NaN: no face); audio_energy_series: short-time
    speech energy (any linear unit, e.g. RMS of 20 ms blocks) at audio_ts. Both are resampled to
    av_resample_hz over their common span; the best Pearson correlation within +-av_max_lag_s decides.
    """
    mouth, mt = _arrays(mouth_series, mouth_ts)
    energy, at = _arrays(audio_energy_series, audio_ts)
    face = np.isfinite(mouth)
    mouth, mt = mouth[face], mt[face]
    good = np.isfinite(energy)
    energy, at = energy[good], at[good]
    kind = CheckKind.AV_SYNC
    if energy.size < 2:
        return _result(kind, Outcome.INCONCLUSIVE, "no_audio", "No audio was received; could not tell.")
    if mouth.size < settings.min_face_frames:
        return _too_few(kind, "while speaking", frames=int(mouth.size))
    start, end = max(mt.min(), at.min()), min(mt.max(), at.max())
    if end - start < settings.av_min_overlap_s:
        return _result(
            kind,
            Outcome.INCONCLUSIVE,
            "too_short",
            "Too little speech with a visible face; could not tell.",
            overlap_s=round(float(max(end - start, 0.0)), 3),
        )
    dt = 1.0 / settings.av_resample_hz
    grid = np.arange(start, end, dt)
    a = _resample(energy, at, grid, dt)
    m = _resample(mouth, mt, grid, 0.0)
    speech_cv = float(a.std() / a.mean()) if a.mean() > 0 else 0.0
    details: dict[str, object] = {
        "speech_cv": round(speech_cv, 3),
        "mouth_std": round(float(m.std()), 4),
        "frames": int(mouth.size),
        "score_unit": "Pearson r",
    }
    if speech_cv < settings.av_min_speech_cv:
        return _result(
            kind,
            Outcome.INCONCLUSIVE,
            "no_speech",
            "No speech was heard; could not tell.",
            None,
            None,
            **details,
        )
    if float(m.std()) < settings.av_min_mouth_std:
        return _result(
            kind,
            Outcome.FAIL,
            "no_mouth_movement",
            "Speech was heard but the mouth did not move.",
            0.0,
            settings.av_pass_corr,
            **details,
        )
    corr, lag = _best_lag_corr(m, a, int(round(settings.av_max_lag_s * settings.av_resample_hz)))
    details["lag_s"] = round(lag * dt, 3)
    if corr >= settings.av_pass_corr:
        return _result(
            kind,
            Outcome.PASS,
            "av_in_sync",
            "Lip movement matches the speech.",
            corr,
            settings.av_pass_corr,
            **details,
        )
    if corr < settings.av_fail_corr:
        return _result(
            kind,
            Outcome.FAIL,
            "av_out_of_sync",
            "Lip movement does not match the speech.",
            corr,
            settings.av_pass_corr,
            **details,
        )
    return _result(
        kind,
        Outcome.INCONCLUSIVE,
        "av_borderline",
        "Could not tell whether the lips match the speech.",
        corr,
        settings.av_pass_corr,
        **details,
    )
