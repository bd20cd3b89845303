"""How the media process's C heap (glibc malloc) treats frame-sized blocks.

A live session allocates and frees a few hundred ~0.5-1 MB blocks a second (decoded VP8 frames, RGB
copies, pickled analysis chunks) from several threads (decoders, frame conversion, the remuxer, the pool's
feeder). glibc raises its mmap threshold to the largest block freed, so after the first frame these
blocks come from per-thread arenas; when the sessions end, those arenas stay large and resident
(`malloc_trim` gives back free pages inside them, not their tops). A fixed threshold keeps such blocks
in their own mappings, which are unmapped when freed.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("kuzet.webrtc")

# mallopt(3) parameter number (malloc.h).
_M_MMAP_THRESHOLD = -3


def set_mmap_threshold(threshold_kb: int) -> bool:
    """Serve allocations of at least `threshold_kb` KiB with their own mapping (glibc; 0 = leave glibc's
    adaptive threshold). True when the setting was applied. Process-wide: call once at start-up."""
    if threshold_kb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_kb * 1024))
    except (OSError, AttributeError):
        return False
    if not applied:
        log.warning("malloc mmap threshold not applied", extra={"threshold_kb": threshold_kb})
    return applied


_MALLINFO_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO_FIELDS]


def mallinfo() -> dict[str, int]:
    """glibc's malloc statistics summed over its arenas (mallinfo2(3), bytes), or {} off glibc.

    `hblkhd`: bytes served from their own mappings; `uordblks` / `fordblks`: in use / free in arenas."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {name: int(getattr(info, name)) for name in _MALLINFO_FIELDS}
