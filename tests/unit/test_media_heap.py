"""The media process's malloc setting: frame-sized blocks get their own mapping, freed or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from media_server.webrtc.heap import set_mmap_threshold

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


# Run in a fresh interpreter, as the media process applies the setting at start-up: in a long-lived
# process (the rest of the suite) earlier frame-sized blocks may already sit free in malloc's arenas, and
# malloc reuses a free chunk that fits before it considers a new mapping.
_CHECK = """
import json
import numpy as np
from media_server.settings import Settings
from media_server.webrtc.heap import mallinfo, set_mmap_threshold


def mapped():
    return mallinfo()["hblkhd"]  # bytes malloc serves from their own mappings now


applied = set_mmap_threshold(Settings().media.malloc_mmap_threshold_kb)
frame_bytes = 640 * 480 * 3
first = np.ones(frame_bytes, np.uint8)
del first  # glibc's adaptive threshold would now rise to this size
before = mapped()
second = np.ones(frame_bytes, np.uint8)
while_held = mapped() - before
del second
print(json.dumps({"applied": applied, "frame": frame_bytes, "held": while_held, "freed": mapped() - before}))
"""


def test_a_frame_freed_and_allocated_again_keeps_its_own_mapping() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["applied"]
    # Without the setting the second frame comes from an arena (and stays resident there once freed).
    assert got["held"] >= got["frame"]
    assert got["freed"] < got["frame"]  # unmapped when freed


def test_zero_leaves_glibc_alone() -> None:
    assert set_mmap_threshold(0) is False
