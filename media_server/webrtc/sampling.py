"""Which received video frames a session keeps for analysis, and which live hints it sends.

Per-window budgets instead of a session-wide rate: inside a challenge window (the baseline before a
prompt and the response window after it) every frame is kept up to `window_max_fps`; between windows
one frame per `between_every_s`. The number of frames held is capped (`max_frames`): when full, a frame
outside every window is released first, and only when none is left is a new frame refused. Nothing is
ever thinned retroactively, so a long session cannot push a blink window below the rate the blink check
needs. Pure Python (no aiortc): the session feeds it times on its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from media_server.webrtc.analysis import FeedbackCode

T = TypeVar("T")

# A frame counts as on time for the window rate when it is at most this fraction of a period early:
# camera timestamps jitter, and a strict ">= period" would drop every other frame of a camera that
# runs at exactly the cap.
_EARLY_FRACTION = 0.25


@dataclass(slots=True)
class Window:
    """A dense-sampling interval [start_s, end_s] on the session clock."""

    start_s: float
    end_s: float

    def holds(self, t_s: float) -> bool:
        """True when t_s lies inside the window."""
        return self.start_s <= t_s <= self.end_s


@dataclass(slots=True)
class FrameSampler(Generic[T]):
    """Keeps (t_s, frame) pairs under per-window budgets; see the module docstring."""

    between_every_s: float
    window_max_fps: float
    max_frames: int
    # False: the sampler only decides which frames are due (live analysis takes them, see live.py).
    retain: bool = True
    windows: list[Window] = field(default_factory=list)
    frames: list[tuple[float, T]] = field(default_factory=list)
    refused: int = 0
    released: int = 0
    _next_between_s: float = 0.0
    _next_window_s: float = float("-inf")

    def add_window(self, start_s: float, end_s: float) -> int:
        """Plan a dense window; returns its index (for `extend_window`)."""
        self.windows.append(Window(start_s, max(start_s, end_s)))
        return len(self.windows) - 1

    def extend_window(self, index: int, end_s: float) -> None:
        """Move a planned window's end later (the prompt went out later than planned)."""
        if 0 <= index < len(self.windows):
            w = self.windows[index]
            w.end_s = max(w.end_s, end_s)

    def in_window(self, t_s: float) -> bool:
        """True when t_s lies inside any planned window."""
        return any(w.holds(t_s) for w in self.windows)

    def wants(self, t_s: float) -> bool:
        """Whether a frame received at t_s should be kept (call `keep` if so, with the decoded frame)."""
        if self.in_window(t_s):
            return t_s >= self._next_window_s - _EARLY_FRACTION / self.window_max_fps
        return t_s >= self._next_between_s

    def keep(self, t_s: float, frame: T) -> bool:
        """Store a frame `wants` accepted; False when the cap refused it."""
        inside = self.in_window(t_s)
        if self.retain and len(self.frames) >= self.max_frames and not self._release_one_outside():
            self.refused += 1
            return False
        if inside:
            period = 1.0 / self.window_max_fps
            # Due times advance on a grid, so a faster camera averages out at the cap (24 fps keeps two
            # frames in three) instead of falling to half of it; at least half a period after this frame.
            self._next_window_s = max(self._next_window_s + period, t_s + period / 2)
        else:
            self._next_between_s = t_s + self.between_every_s
        if self.retain:
            self.frames.append((t_s, frame))
        return True

    def _release_one_outside(self) -> bool:
        for i, (t_s, _) in enumerate(self.frames):
            if not self.in_window(t_s):
                del self.frames[i]
                self.released += 1
                return True
        return False

    def take(self) -> list[tuple[float, T]]:
        """Hand over the frames in time order and release them from the sampler."""
        out, self.frames = self.frames, []
        return out


@dataclass(slots=True)
class FeedbackDebouncer:
    """Turns per-frame hints into messages: a problem is announced only once it has persisted.

    A problem code is sent after every hint for `hold_s` seconds agreed on it; OK is sent as soon as
    a previously announced problem clears. Returns the code to send, or None.
    """

    hold_s: float
    announced: FeedbackCode | None = None
    _candidate: FeedbackCode | None = None
    _since_s: float = 0.0

    def feed(self, t_s: float, code: FeedbackCode) -> FeedbackCode | None:
        """One hint at session time t_s; the code to send now, if any."""
        if code is FeedbackCode.OK:
            self._candidate = None
            if self.announced is not None and self.announced is not FeedbackCode.OK:
                self.announced = FeedbackCode.OK
                return FeedbackCode.OK
            return None
        if code is not self._candidate:
            self._candidate, self._since_s = code, t_s
        if code is not self.announced and t_s - self._since_s >= self.hold_s:
            self.announced = code
            return code
        return None
