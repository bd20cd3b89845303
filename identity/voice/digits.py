"""Spoken digits checked in any language: the person's own digit templates and connected-word DTW.

No offline recogniser exists for Russian or Kazakh, so the digits are matched speaker-dependently: at
enrolment the person says each digit 0-9 (one or more takes, supervised by the officer) and each take
becomes a template (MFCC + deltas of its speech frames; all frames are centred and scaled with the mean
and deviation over the whole enrolment). At a check-in the utterance of the random digit string (with or
without pauses) is judged in three steps:

1. level building over all templates, constrained to N = len(expected) digits with free pauses
   between them, cuts the utterance into N segments without looking at the expected digits (so a
   wrong expectation cannot bend the segmentation to fit it);
2. each segment is scored alone against every take (isolated-word DTW): margin = (best take of the
   expected digit - best take of any other digit) / segment frames, in feature units per frame;
3. score = the worst (largest) margin over the digits. PASS when it is at most `max_margin`, FAIL
   ("the spoken digits did not match") above. The recognised string (best digit per segment) and
   every digit's distances are in the details.

Too little speech, no signal, too much noise, or speech that resembles none of the person's digits are
INCONCLUSIVE / TECHNICAL, never FAIL. Audio everywhere is `Pcm16k` (16 kHz mono float32 in [-1, 1]);
light module: numpy, scipy and librosa's mel filter bank, no torch.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.voice.audio import SAMPLE_RATE_HZ, Pcm16k
from identity.voice.config import DigitSegmentation, DigitSettings
from identity.voice.quality import estimate_snr_db
from identity.voice.vad import Segment

DIGITS = "0123456789"
ALGORITHM = "digit_dtw"
ALGORITHM_VERSION = "1"
MARGIN_CAP = 99.0
"""Margin reported when a digit's takes cannot be stretched or squeezed onto its segment at all."""
SCORE_UNIT = "worst per-digit margin: expected minus closest other digit, feature distance per frame"

_MAGIC = b"KZDG"
_VERSION = 1
_HEAD = struct.Struct("<4sBI")
_PRE_EMPHASIS = 0.97  # standard first-order high-pass before MFCC
_DELTA_HALF_WIDTH = 2  # regression over +-2 frames (HTK's default)
_LOG_FLOOR = 1e-10
_NOISE_PERCENTILE = 10.0
_LOUD_PERCENTILE = 95.0
_MAX_EXPECTED_DIGITS = 20
_MIN_SCALE = 1e-3  # floor of a feature's standard deviation (a constant dimension must not divide by 0)

Features = npt.NDArray[np.float32]
"""Frames x dims: c1..c(n-1) then deltas of c0..c(n-1); shape (n_frames, 2 * n_mfcc - 1)."""


class DigitTemplateError(ValueError):
    """Digit-template bytes are malformed or from another format version."""


@dataclass(frozen=True)
class FeatureConfig:
    """How template frames were computed; a check re-computes the probe the same way."""

    n_mfcc: int
    n_mels: int
    fmax_hz: float
    frame_ms: float
    hop_ms: float

    @classmethod
    def from_settings(cls, s: DigitSettings) -> FeatureConfig:
        """The feature part of the settings."""
        return cls(s.n_mfcc, s.n_mels, float(s.fmax_hz), float(s.frame_ms), float(s.hop_ms))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the template header."""
        return {
            "n_mfcc": self.n_mfcc,
            "n_mels": self.n_mels,
            "fmax_hz": self.fmax_hz,
            "frame_ms": self.frame_ms,
            "hop_ms": self.hop_ms,
        }

    @property
    def dim(self) -> int:
        """Feature dimension per frame."""
        return 2 * self.n_mfcc - 1


def model_stamp(config: FeatureConfig) -> ModelStamp:
    """The stamp of the matcher: no weights, so the hash is of the feature configuration."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    return ModelStamp(ALGORITHM, ALGORITHM_VERSION, digest)


@dataclass(frozen=True)
class DigitTemplates:
    """One person's digit templates: `takes` is a list of (digit, features (n_frames, dim))."""

    config: FeatureConfig
    takes: list[tuple[str, Features]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Takes per digit."""
        return {d: sum(1 for t, _ in self.takes if t == d) for d in DIGITS}

    @property
    def stamp(self) -> ModelStamp:
        """Model stamp of checks made with these templates."""
        return model_stamp(self.config)


def templates_to_bytes(templates: DigitTemplates) -> bytes:
    """Serialise (no pickle): magic, version, header length, JSON header, float32 LE frames of all takes."""
    mats = [np.ascontiguousarray(f, dtype="<f4") for _, f in templates.takes]
    for m in mats:
        if m.ndim != 2 or m.shape[1] != templates.config.dim:
            raise DigitTemplateError(f"take of shape {m.shape} does not have {templates.config.dim} dims")
    header = json.dumps(
        {
            "config": templates.config.to_dict(),
            "digits": [d for d, _ in templates.takes],
            "frames": [int(m.shape[0]) for m in mats],
            "metadata": templates.metadata,
        },
        sort_keys=True,
    ).encode()
    return _HEAD.pack(_MAGIC, _VERSION, len(header)) + header + b"".join(m.tobytes() for m in mats)


def templates_from_bytes(data: bytes) -> DigitTemplates:
    """Inverse of `templates_to_bytes`; DigitTemplateError on anything malformed."""
    if len(data) < _HEAD.size:
        raise DigitTemplateError("digit template too short")
    magic, version, header_len = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise DigitTemplateError(f"not a version-{_VERSION} digit template")
    try:
        header = json.loads(data[_HEAD.size : _HEAD.size + header_len])
        config = FeatureConfig(**header["config"])
        digits = [str(d) for d in header["digits"]]
        frames = [int(n) for n in header["frames"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DigitTemplateError(f"bad digit template header: {exc}") from exc
    if len(digits) != len(frames) or any(d not in DIGITS or len(d) != 1 for d in digits):
        raise DigitTemplateError("bad digit labels")
    body = data[_HEAD.size + header_len :]
    if len(body) != sum(frames) * config.dim * 4:
        raise DigitTemplateError(
            f"digit template body is {len(body)} bytes, expected {sum(frames) * config.dim * 4}"
        )
    flat = np.frombuffer(body, dtype="<f4").reshape(-1, config.dim).astype(np.float32)
    bounds = np.cumsum([0, *frames])
    takes = [(d, flat[bounds[i] : bounds[i + 1]]) for i, d in enumerate(digits)]
    return DigitTemplates(config, takes, dict(header.get("metadata", {})))


# ---------------------------------------------------------------------------------------------------------
# Front end: frames, MFCC, speech frames


@dataclass(frozen=True)
class SpeechFrames:
    """A clip's frames: raw features (n_frames, dim), which are speech, and speech segments in samples."""

    features: Features
    n_frames: int
    speech_mask: npt.NDArray[np.bool_]
    segments: list[Segment]
    hop: int

    @property
    def speech_s(self) -> float:
        """Seconds of detected speech."""
        return float(self.speech_mask.sum()) * self.hop / SAMPLE_RATE_HZ


@lru_cache(maxsize=8)
def _mel_basis(n_fft: int, n_mels: int, fmax_hz: float) -> npt.NDArray[np.float64]:
    from librosa.filters import mel

    basis: npt.NDArray[np.float64] = np.asarray(
        mel(sr=SAMPLE_RATE_HZ, n_fft=n_fft, n_mels=n_mels, fmin=20.0, fmax=fmax_hz), dtype=np.float64
    )
    return basis


def _frames(x: npt.NDArray[np.float64], win: int, hop: int) -> npt.NDArray[np.float64]:
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    out: npt.NDArray[np.float64] = x[idx]
    return out


def _deltas(c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    w = _DELTA_HALF_WIDTH
    padded = np.pad(c, ((w, w), (0, 0)), mode="edge")
    n = len(c)
    num = sum(k * (padded[w + k : w + k + n] - padded[w - k : w - k + n]) for k in range(1, w + 1))
    return np.asarray(num / (2 * sum(k * k for k in range(1, w + 1))), dtype=np.float64)


def cepstra(
    pcm16k: Pcm16k, config: FeatureConfig
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    """(MFCC+delta frames (n_frames, dim), frame levels in dBFS (n_frames,), hop in samples)."""
    from scipy.fft import dct

    win = int(round(config.frame_ms * SAMPLE_RATE_HZ / 1000))
    hop = int(round(config.hop_ms * SAMPLE_RATE_HZ / 1000))
    n_fft = 1 << (win - 1).bit_length()
    x = np.asarray(pcm16k, dtype=np.float64)
    raw = _frames(x, win, hop)
    level_db = 10 * np.log10(np.maximum((raw**2).mean(axis=1), _LOG_FLOOR))
    emph = np.append(x[:1], x[1:] - _PRE_EMPHASIS * x[:-1])
    spec = np.abs(np.fft.rfft(_frames(emph, win, hop) * np.hamming(win), n=n_fft, axis=1)) ** 2
    logmel = np.log(np.maximum(spec @ _mel_basis(n_fft, config.n_mels, config.fmax_hz).T, _LOG_FLOOR))
    c = dct(logmel, type=2, norm="ortho", axis=1)[:, : config.n_mfcc]
    feats = np.hstack([c[:, 1:], _deltas(c)])
    return feats, level_db, hop


def speech_mask(
    level_db: npt.NDArray[np.float64], hop: int, settings: DigitSettings
) -> npt.NDArray[np.bool_]:
    """Energy speech detector over frame levels (dBFS): above floor and above noise + fraction x range."""
    if level_db.size == 0:
        return np.zeros(0, dtype=bool)
    noise = max(float(np.percentile(level_db, _NOISE_PERCENTILE)), settings.vad_floor_dbfs)
    loud = float(np.percentile(level_db, _LOUD_PERCENTILE))
    threshold = max(noise + settings.vad_fraction * max(loud - noise, 0.0), settings.vad_floor_dbfs)
    mask = level_db > threshold
    pad = int(round(settings.vad_pad_ms * SAMPLE_RATE_HZ / 1000 / hop))
    if pad and mask.any():
        kernel = np.ones(2 * pad + 1, dtype=bool)
        mask = np.convolve(mask, kernel, mode="same") > 0
    return np.asarray(mask, dtype=bool)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def speech_frames(pcm16k: Pcm16k, config: FeatureConfig, settings: DigitSettings) -> SpeechFrames:
    """The clip's frames and which of them are speech (features not normalised: matching does that)."""
    feats, level_db, hop = cepstra(pcm16k, config)
    mask = speech_mask(level_db, hop, settings)
    segments = [(s * hop, min(e * hop, len(pcm16k))) for s, e in _runs(mask)]
    return SpeechFrames(feats.astype(np.float32), len(feats), mask, segments, hop)


# ---------------------------------------------------------------------------------------------------------
# Level-building DTW


@dataclass(frozen=True)
class Word:
    """One decoded digit: which template, its input frames [start, end] (speech frames), its path cost."""

    digit: str
    take: int
    start: int
    end: int
    cost: float

    @property
    def cost_per_frame(self) -> float:
        """Path cost divided by the frames it spans."""
        return self.cost / (self.end - self.start + 1)


@dataclass(frozen=True)
class Decode:
    """A level-building result: total path cost (inf when no path fits) and its words."""

    cost: float
    words: list[Word]

    @property
    def digits(self) -> str:
        """The decoded digit string."""
        return "".join(w.digit for w in self.words)


class _Bank:
    """Takes' frames stacked and normalised: state m belongs to take `take_of[m]` (index into `labels`).

    Features are centred and scaled with the mean and standard deviation over all enrolment frames
    (every digit), not per take, so that digits keep their own spectral shape.
    """

    def __init__(self, templates: DigitTemplates, keep: Sequence[int] | None = None) -> None:
        every = np.vstack([f for _, f in templates.takes]).astype(np.float64)
        self.mean = every.mean(axis=0)
        self.scale = np.maximum(every.std(axis=0), _MIN_SCALE)
        chosen = list(range(len(templates.takes))) if keep is None else list(keep)
        lengths = np.array([len(templates.takes[k][1]) for k in chosen], dtype=np.int64)
        self.labels = [templates.takes[k][0] for k in chosen]
        raw = np.vstack([templates.takes[k][1] for k in chosen]).astype(np.float64)
        self.frames = (raw - self.mean) / self.scale
        self.take_of = np.repeat(np.arange(len(lengths)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.is_start = np.zeros(len(self.frames), dtype=bool)
        self.is_start[starts] = True
        self.second = np.zeros(len(self.frames), dtype=bool)
        self.second[starts[lengths > 1] + 1] = True
        self.is_end = np.zeros(len(self.frames), dtype=bool)
        self.is_end[starts + lengths - 1] = True
        self.end_states = np.flatnonzero(self.is_end)
        self.n_takes = len(lengths)

    def distances(
        self, probe: npt.NDArray[np.float64], probe_mean: npt.NDArray[np.float64] | None
    ) -> npt.NDArray[np.float64]:
        """Euclidean distances of normalised frames, shape (n_probe_frames, n_states).

        The probe is centred on `probe_mean` (its own speech mean) or, when None, the enrolment mean.
        """
        p = (probe - (self.mean if probe_mean is None else probe_mean)) / self.scale
        sq = (p**2).sum(axis=1)[:, None] + (self.frames**2).sum(axis=1)[None, :] - 2 * p @ self.frames.T
        return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def _shift(a: npt.NDArray[Any], k: int, fill: Any) -> npt.NDArray[Any]:
    out = np.empty_like(a)
    out[:, :k] = fill
    out[:, k:] = a[:, :-k]
    return out


def level_build(
    dist: npt.NDArray[np.float64],
    pause_cost: npt.NDArray[np.float64],
    bank: _Bank,
    allowed: Sequence[npt.NDArray[np.bool_]],
    step_penalty: float,
    slope_limit: bool,
) -> Decode:
    """Cheapest path through len(allowed) words over all probe frames; `allowed[l]` masks takes per level.

    `dist` (n_frames, n_states) are frame distances; `pause_cost` (n_frames,) is the cost of a frame
    spent in a pause before, between or after words (inf on speech frames). Within a word the template
    index advances by 0, 1 or 2 per probe frame (0 and 2 cost `step_penalty`; 0 never twice in a row,
    so a word lasts between half and twice its template's length); a word runs from its first to its
    last template frame.
    """
    n_levels = len(allowed)
    n_t, n_m = dist.shape
    inf = np.inf
    rows = np.arange(n_levels)
    state_ok = np.stack([a[bank.take_of] for a in allowed])  # (L, M)
    # Two copies of every state: reached by a move (index 0) or by repeating the template frame (1).
    # Carried per state: accumulated cost, probe frame the word began, frame the previous word ended,
    # path cost when the word began.
    acc = np.full((2, n_levels, n_m), inf)
    begin = np.zeros((2, n_levels, n_m), dtype=np.int64)
    prev = np.full((2, n_levels, n_m), -1, dtype=np.int64)
    base = np.zeros((2, n_levels, n_m))
    gap = np.full(n_levels + 1, inf)  # cost of being in the pause before word l (l = n_levels: after)
    gap_prev = np.full(n_levels + 1, -1, dtype=np.int64)
    end_cost = np.full((n_levels, n_t), inf)
    end_take = np.full((n_levels, n_t), -1, dtype=np.int64)
    end_begin = np.full((n_levels, n_t), -1, dtype=np.int64)
    end_prev = np.full((n_levels, n_t), -1, dtype=np.int64)
    end_base = np.zeros((n_levels, n_t))
    no_diag = bank.is_start[None, :]
    no_skip = (bank.is_start | bank.second)[None, :]
    for i in range(n_t):
        if i == 0:
            ready = np.full(n_levels + 1, inf)
            ready[0] = 0.0
            ready_prev = np.full(n_levels + 1, -1, dtype=np.int64)
            moved = np.full((n_levels, n_m), inf)
            m_begin, m_prev, m_base = begin[0], prev[0], base[0]
            stayed = np.full((n_levels, n_m), inf)
            s_begin, s_prev, s_base = begin[0], prev[0], base[0]
        else:
            # the best way to be just before word l at frame i: word l-1 ended at i-1, or a pause
            ended = np.concatenate([[inf], end_cost[:, i - 1]])
            from_gap = gap < ended
            ready = np.where(from_gap, gap, ended)
            ready_prev = np.where(from_gap, gap_prev, i - 1)
            pick = acc[1] < acc[0]
            best_acc = np.where(pick, acc[1], acc[0])
            best_begin = np.where(pick, begin[1], begin[0])
            best_prev = np.where(pick, prev[1], prev[0])
            best_base = np.where(pick, base[1], base[0])
            diag = np.where(no_diag, inf, _shift(best_acc, 1, inf))
            skip = np.where(no_skip, inf, _shift(best_acc, 2, inf) + step_penalty)
            take = skip < diag
            moved = np.where(take, skip, diag)
            m_begin = np.where(take, _shift(best_begin, 2, 0), _shift(best_begin, 1, 0))
            m_prev = np.where(take, _shift(best_prev, 2, -1), _shift(best_prev, 1, -1))
            m_base = np.where(take, _shift(best_base, 2, 0.0), _shift(best_base, 1, 0.0))
            if slope_limit:
                stayed = acc[0] + step_penalty
                s_begin, s_prev, s_base = begin[0], prev[0], base[0]
            else:
                stayed = best_acc + step_penalty
                s_begin, s_prev, s_base = best_begin, best_prev, best_base
        enter = bank.is_start[None, :] & (ready[:n_levels, None] < moved)
        moved = np.where(enter, ready[:n_levels, None], moved)
        begin = np.stack([np.where(enter, i, m_begin), s_begin])
        prev = np.stack([np.where(enter, ready_prev[:n_levels, None], m_prev), s_prev])
        base = np.stack([np.where(enter, ready[:n_levels, None], m_base), s_base])
        acc = np.where(state_ok[None], np.stack([moved, stayed]) + dist[i][None, None, :], inf)
        gap = ready + pause_cost[i]
        gap_prev = ready_prev
        ends = np.minimum(acc[0], acc[1])[:, bank.end_states]
        via = (acc[1] < acc[0])[:, bank.end_states]
        arg = ends.argmin(axis=1)
        at = bank.end_states[arg]
        v = via[rows, arg].astype(np.int64)
        end_cost[:, i] = ends[rows, arg]
        end_take[:, i] = bank.take_of[at]
        end_begin[:, i] = begin[v, rows, at]
        end_prev[:, i] = prev[v, rows, at]
        end_base[:, i] = base[v, rows, at]
    last = float(end_cost[-1, -1])
    if gap[-1] < last:
        total, i = float(gap[-1]), int(gap_prev[-1])
    else:
        total, i = last, n_t - 1
    if not np.isfinite(total):
        return Decode(inf, [])
    words: list[Word] = []
    for level in range(n_levels - 1, -1, -1):
        k = int(end_take[level, i])
        words.append(
            Word(
                bank.labels[k],
                k,
                int(end_begin[level, i]),
                i,
                float(end_cost[level, i] - end_base[level, i]),
            )
        )
        i = int(end_prev[level, i])
    words.reverse()
    return Decode(total, words)


# ---------------------------------------------------------------------------------------------------------
# Enrolment


def _result(
    outcome: Outcome,
    code: str,
    message: str,
    *,
    score: float | None = None,
    threshold: float | None = None,
    model: ModelStamp | None = None,
    **details: Any,
) -> CheckResult:
    return CheckResult(
        CheckKind.SPOKEN_DIGITS, outcome, code, message, score, threshold, model, dict(details)
    )


def take_features(pcm16k: Pcm16k, settings: DigitSettings) -> Features | CheckResult:
    """Template frames of one take of one digit, or an INCONCLUSIVE/TECHNICAL result saying why not."""
    x = np.asarray(pcm16k, dtype=np.float64)
    if x.size == 0 or 10 * np.log10(max(float(np.mean(x**2)), _LOG_FLOOR)) < settings.silence_rms_dbfs:
        return _result(Outcome.TECHNICAL, "no_signal", "No sound was recorded; check the microphone.")
    frames = speech_frames(pcm16k, FeatureConfig.from_settings(settings), settings)
    if frames.speech_s < settings.min_template_speech_s:
        return _result(
            Outcome.INCONCLUSIVE,
            "too_little_speech",
            "The digit was not heard clearly; say it again.",
            speech_s=round(frames.speech_s, 3),
        )
    return frames.features[frames.speech_mask]


def enrol_digits(
    takes: Mapping[str, Sequence[Pcm16k]], settings: DigitSettings, metadata: dict[str, Any] | None = None
) -> tuple[DigitTemplates | None, list[CheckResult]]:
    """Templates from takes of each digit ({"0": [pcm16k, ...], ..., "9": [...]}).

    Returns (templates or None, results): one result per rejected take (details name the digit and take)
    and a final summary: PASS "enrolled", or INCONCLUSIVE "missing_digits" when a digit has fewer than
    `min_takes_per_digit` usable takes.
    """
    config = FeatureConfig.from_settings(settings)
    kept: list[tuple[str, Features]] = []
    results: list[CheckResult] = []
    for digit in DIGITS:
        n_kept = 0
        for index, pcm in enumerate(takes.get(digit, [])):
            if n_kept >= settings.max_takes_per_digit:
                break
            got = take_features(pcm, settings)
            if isinstance(got, CheckResult):
                results.append(
                    CheckResult(
                        got.kind,
                        got.outcome,
                        got.code,
                        got.message,
                        details={**got.details, "digit": digit, "take": index},
                    )
                )
                continue
            kept.append((digit, got))
            n_kept += 1
    counts = {d: sum(1 for t, _ in kept if t == d) for d in DIGITS}
    missing = [d for d in DIGITS if counts[d] < settings.min_takes_per_digit]
    if missing:
        results.append(
            _result(
                Outcome.INCONCLUSIVE,
                "missing_digits",
                f"Not enough clear takes of digit(s) {', '.join(missing)}; record them again.",
                model=model_stamp(config),
                takes_per_digit=counts,
                min_takes_per_digit=settings.min_takes_per_digit,
            )
        )
        return None, results
    templates = DigitTemplates(config, kept, dict(metadata or {}))
    results.append(
        _result(
            Outcome.PASS,
            "enrolled",
            f"Digit templates enrolled from {len(kept)} takes.",
            model=templates.stamp,
            takes_per_digit=counts,
        )
    )
    return templates, results


def split_by_pauses(pcm16k: Pcm16k, n_words: int, settings: DigitSettings) -> list[Pcm16k] | None:
    """Cut a recording of `n_words` digits said with pauses into one clip per digit, or None.

    Speech runs are found with the energy detector; the shortest pauses are merged away until `n_words`
    runs remain. None when fewer runs than words were heard (digits said without pauses).
    """
    config = FeatureConfig.from_settings(settings)
    _, level_db, hop = cepstra(pcm16k, config)
    runs = _runs(speech_mask(level_db, hop, settings))
    if len(runs) < n_words or n_words < 1:
        return None
    while len(runs) > n_words:
        gaps = [runs[j + 1][0] - runs[j][1] for j in range(len(runs) - 1)]
        j = int(np.argmin(gaps))
        runs[j : j + 2] = [(runs[j][0], runs[j + 1][1])]
    return [
        Pcm16k(np.asarray(pcm16k[s * hop : min(e * hop + hop, len(pcm16k))], dtype=np.float32))
        for s, e in runs
    ]


# ---------------------------------------------------------------------------------------------------------
# Check


def take_costs(
    dist: npt.NDArray[np.float64], bank: _Bank, step_penalty: float, slope_limit: bool
) -> npt.NDArray[np.float64]:
    """Isolated-word DTW cost of every take over all of `dist`'s frames (n_frames, n_states) -> (n_takes,).

    Same local steps as `level_build`; inf for a take that cannot span the frames.
    """
    inf = np.inf
    moved = np.where(bank.is_start, dist[0], inf)[None, :]
    stayed = np.full_like(moved, inf)
    no_diag = bank.is_start[None, :]
    no_skip = (bank.is_start | bank.second)[None, :]
    for i in range(1, len(dist)):
        best = np.minimum(moved, stayed)
        diag = np.where(no_diag, inf, _shift(best, 1, inf))
        skip = np.where(no_skip, inf, _shift(best, 2, inf) + step_penalty)
        stayed = (moved if slope_limit else best) + step_penalty + dist[i][None, :]
        moved = np.minimum(diag, skip) + dist[i][None, :]
    out: npt.NDArray[np.float64] = np.minimum(moved, stayed)[0, bank.end_states]
    return out


@dataclass(frozen=True)
class DigitScore:
    """One expected digit judged on the probe frames of its segment."""

    expected: str
    recognised: str
    start: int
    end: int
    expected_cost: float
    rival: str
    rival_cost: float

    @property
    def margin(self) -> float:
        """(expected digit's best take - best take of any other digit) per frame; > 0: another fits better.

        +-MARGIN_CAP when one side cannot span the segment at all (kept finite for JSON storage).
        """
        if not np.isfinite(self.expected_cost):
            return MARGIN_CAP
        if not np.isfinite(self.rival_cost):
            return -MARGIN_CAP
        return float(
            np.clip(
                (self.expected_cost - self.rival_cost) / (self.end - self.start + 1), -MARGIN_CAP, MARGIN_CAP
            )
        )


@dataclass(frozen=True)
class DigitMatch:
    """An utterance cut into digits (`path`), each segment scored against the others."""

    path: Decode
    digits: list[DigitScore]
    n_frames: int
    offset: int

    @property
    def recognised(self) -> str:
        """The best-fitting digit of each aligned segment."""
        return "".join(d.recognised for d in self.digits)

    @property
    def worst_margin(self) -> float:
        """The largest per-digit margin (feature units per frame); inf when no alignment fits."""
        return max((d.margin for d in self.digits), default=np.inf)

    @property
    def cost_per_frame(self) -> float:
        """Segmentation path cost per frame (pauses included)."""
        return self.path.cost / max(self.n_frames, 1)


def match_digits(
    frames: SpeechFrames, expected: str, templates: DigitTemplates, settings: DigitSettings
) -> DigitMatch:
    """Segment the probe (first to last speech frame) into len(expected) digits, then score each segment.

    Step 1, level building finds where each digit was said (pauses between digits cost no template
    distance): over any digits (`segmentation=free`, independent of what was expected) or over the
    expected digits only (`forced`). Step 2 scores each segment alone against every take:
    margin = (best take of the expected digit - best take of any other digit) / segment frames.
    """
    speech = np.flatnonzero(frames.speech_mask)
    lo, hi = int(speech[0]), int(speech[-1]) + 1
    mask = frames.speech_mask[lo:hi]
    probe = frames.features[lo:hi].astype(np.float64)
    probe_mean = probe[mask].mean(axis=0) if settings.probe_cmn else None
    pause = np.where(mask, np.inf, settings.pause_cost)
    bank = _Bank(templates)
    labels = np.array(bank.labels)
    if settings.segmentation is DigitSegmentation.FREE:
        every = np.ones(bank.n_takes, dtype=bool)
        path = level_build(
            bank.distances(probe, probe_mean),
            pause,
            bank,
            [every] * len(expected),
            settings.step_penalty,
            settings.slope_limit,
        )
    else:
        wanted = [k for k, (d, _) in enumerate(templates.takes) if d in expected]
        sub = _Bank(templates, wanted)
        sub_labels = np.array(sub.labels)
        path = level_build(
            sub.distances(probe, probe_mean),
            pause,
            sub,
            [sub_labels == d for d in expected],
            settings.step_penalty,
            settings.slope_limit,
        )
    scores: list[DigitScore] = []
    for digit, word in zip(expected, path.words, strict=False):
        costs = take_costs(
            bank.distances(probe[word.start : word.end + 1], probe_mean),
            bank,
            settings.step_penalty,
            settings.slope_limit,
        )
        own = costs[labels == digit]
        others = np.flatnonzero(labels != digit)
        rival = int(others[np.argmin(costs[others])]) if others.size else -1
        best = int(np.argmin(costs))
        scores.append(
            DigitScore(
                digit,
                bank.labels[best],
                word.start,
                word.end,
                float(own.min()),
                bank.labels[rival] if rival >= 0 else "",
                float(costs[rival]) if rival >= 0 else np.inf,
            )
        )
    return DigitMatch(path, scores, hi - lo, lo)


def _per_frame(cost: float, d: DigitScore) -> float | None:
    return round(cost / (d.end - d.start + 1), 4) if np.isfinite(cost) else None


def check_spoken_digits(
    pcm16k: Pcm16k, expected: str, templates: DigitTemplates, settings: DigitSettings
) -> CheckResult:
    """SPOKEN_DIGITS result for one utterance of `expected` (16 kHz mono float32, the prompt's window).

    PASS: the digits said are the expected ones. FAIL "digits_mismatch": other digits were said.
    INCONCLUSIVE / TECHNICAL: no signal, too little speech, too noisy, or speech unlike the person's digits.
    """
    stamp = templates.stamp
    if not expected or len(expected) > _MAX_EXPECTED_DIGITS or any(c not in DIGITS for c in expected):
        return _result(
            Outcome.TECHNICAL,
            "bad_expected",
            "The expected digits are not a digit string.",
            model=stamp,
            expected=expected,
        )
    missing = [d for d in set(expected) if templates.counts()[d] == 0]
    if missing:
        return _result(
            Outcome.TECHNICAL,
            "not_enrolled",
            "The person's digit templates lack some digits; enrol the digits again.",
            model=stamp,
            missing=sorted(missing),
        )
    x = np.asarray(pcm16k, dtype=np.float64)
    rms_dbfs = 10 * np.log10(max(float(np.mean(x**2)), _LOG_FLOOR)) if x.size else -100.0
    if rms_dbfs < settings.silence_rms_dbfs:
        return _result(
            Outcome.TECHNICAL,
            "no_signal",
            "No sound was recorded; check that the microphone is on.",
            score=rms_dbfs,
            threshold=settings.silence_rms_dbfs,
            model=stamp,
            score_unit="dBFS",
            expected=expected,
        )
    frames = speech_frames(pcm16k, templates.config, settings)
    need_s = settings.min_speech_s_per_digit * len(expected)
    base: dict[str, Any] = {"expected": expected, "speech_s": round(frames.speech_s, 3)}
    if frames.speech_s < need_s:
        return _result(
            Outcome.INCONCLUSIVE,
            "too_little_speech",
            "Too little speech was heard; say all the digits clearly.",
            score=frames.speech_s,
            threshold=need_s,
            model=stamp,
            score_unit="seconds of speech",
            **base,
        )
    snr_db = estimate_snr_db(pcm16k, frames.segments)
    base["snr_db"] = round(snr_db, 2)
    if snr_db < settings.min_snr_db:
        return _result(
            Outcome.INCONCLUSIVE,
            "too_noisy",
            "Too much background noise to hear the digits; find a quieter place.",
            score=snr_db,
            threshold=settings.min_snr_db,
            model=stamp,
            score_unit="dB",
            **base,
        )
    m = match_digits(frames, expected, templates, settings)
    if not np.isfinite(m.path.cost):
        return _result(
            Outcome.INCONCLUSIVE,
            "too_little_speech",
            "The speech was too short for that many digits; say all the digits.",
            model=stamp,
            **base,
        )
    hop_s = frames.hop / SAMPLE_RATE_HZ
    details: dict[str, Any] = {
        **base,
        "recognised": m.recognised,
        "score_unit": SCORE_UNIT,
        "cost_per_frame": round(m.cost_per_frame, 4),
        "max_frame_cost": settings.max_frame_cost,
        "per_digit": [
            {
                "expected": d.expected,
                "recognised": d.recognised,
                "start_s": round((m.offset + d.start) * hop_s, 3),
                "end_s": round((m.offset + d.end + 1) * hop_s, 3),
                "expected_distance": _per_frame(d.expected_cost, d),
                "closest_other_digit": d.rival,
                "closest_other_distance": _per_frame(d.rival_cost, d),
                "margin": round(d.margin, 4),
            }
            for d in m.digits
        ],
    }
    if m.cost_per_frame > settings.max_frame_cost:
        return _result(
            Outcome.INCONCLUSIVE,
            "unlike_templates",
            "The speech did not resemble the person's enrolled digits; the check goes to review.",
            score=m.cost_per_frame,
            threshold=settings.max_frame_cost,
            model=stamp,
            **{**details, "score_unit": "feature distance per frame (segmentation path)"},
        )
    score = m.worst_margin
    if score <= settings.max_margin:
        return _result(
            Outcome.PASS,
            "digits_match",
            "The spoken digits matched.",
            score=score,
            threshold=settings.max_margin,
            model=stamp,
            **details,
        )
    return _result(
        Outcome.FAIL,
        "digits_mismatch",
        "The spoken digits did not match the digits shown.",
        score=score,
        threshold=settings.max_margin,
        model=stamp,
        **details,
    )


def prompt_window(
    pcm16k: Pcm16k, audio_t0_s: float | None, prompt_t_s: float, window_s: float
) -> Pcm16k | None:
    """The session audio from the digits prompt to the end of its window, or None when there is none.

    `pcm16k` is the whole session's 16 kHz mono audio whose first sample is at `audio_t0_s` on the
    session clock; `prompt_t_s` is when the prompt was delivered on the same clock (seconds).
    """
    if audio_t0_s is None or not np.isfinite(prompt_t_s) or len(pcm16k) == 0:
        return None
    start = max(int(round((prompt_t_s - audio_t0_s) * SAMPLE_RATE_HZ)), 0)
    end = min(int(round((prompt_t_s + window_s - audio_t0_s) * SAMPLE_RATE_HZ)), len(pcm16k))
    if end <= start:
        return None
    return Pcm16k(np.ascontiguousarray(pcm16k[start:end], dtype=np.float32))
