"""The one face box of the code base (face engine, anti-spoofing, breath photos)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A face box in pixels of its image: left/top inclusive, right/bottom exclusive (dlib rectangles).

    Build it with keywords; `from_css` reads face_recognition's (top, right, bottom, left) order and
    `as_list` writes it back in that order for JSON details.
    """

    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def from_css(cls, css: Sequence[int]) -> FaceBox:
        """From face_recognition's (top, right, bottom, left) order."""
        top, right, bottom, left = (int(v) for v in css)
        return cls(left=left, top=top, right=right, bottom=bottom)

    @property
    def width(self) -> int:
        """Box width in pixels."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Box height in pixels."""
        return self.bottom - self.top

    def as_list(self) -> list[int]:
        """[top, right, bottom, left] (face_recognition's order) for JSON details."""
        return [self.top, self.right, self.bottom, self.left]
