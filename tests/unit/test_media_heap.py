"""The media process's malloc setting: frame-sized blocks get their own mapping, freed or not."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from media_server.settings import Settings
from media_server.webrtc.heap import set_mmap_threshold

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
        + ("fordblks", "keepcost")
    ]


def _mapped_bytes() -> int:
    """Bytes malloc serves from their own mappings now (mallinfo2's hblkhd)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


def test_a_frame_freed_and_allocated_again_keeps_its_own_mapping() -> None:
    frame_bytes = 640 * 480 * 3
    assert set_mmap_threshold(Settings().media.malloc_mmap_threshold_kb)
    # glibc's adaptive threshold would rise to this size when the first frame is freed, and the second
    # frame would then come from an arena (and stay resident there after it is freed).
    first = np.ones(frame_bytes, np.uint8)
    del first
    before = _mapped_bytes()
    second = np.ones(frame_bytes, np.uint8)
    assert _mapped_bytes() - before >= frame_bytes
    del second
    assert _mapped_bytes() - before < frame_bytes  # unmapped when freed


def test_zero_leaves_glibc_alone() -> None:
    assert set_mmap_threshold(0) is False
