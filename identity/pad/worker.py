"""Process-pool entry points for PAD (use with a spawn ProcessPoolExecutor owned by the service).

    pool = ProcessPoolExecutor(n, mp_context=get_context("spawn"),
                               initializer=init_worker, initargs=(str(models_dir), settings.pad.model_dump()))
    result = await loop.run_in_executor(pool, pad_score_rgb, frame_rgb, (left, top, right, bottom))

Everything passed in and out pickles: numpy frames, plain tuples and `CheckResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, Outcome
from identity.geometry import FaceBox
from identity.pad.config import PadSettings

BoxLike = FaceBox | tuple[int, int, int, int] | None

# The one engine of this worker process, set by the pool initializer. A process-local slot is how
# ProcessPoolExecutor initializers hand state to tasks; nothing else writes it.
_state: dict[str, Any] = {}


def init_worker(models_dir: str, pad_settings: dict[str, Any]) -> None:
    """Pool initializer: verify and load both MiniFASNet models once per worker process."""
    import torch

    from identity.pad.engine import load_engine

    # One intra-op thread per worker: the pool gives parallelism, oversubscription only slows it.
    torch.set_num_threads(1)
    _state["engine"] = load_engine(Path(models_dir), PadSettings.model_validate(pad_settings))


def _to_box(box: BoxLike) -> FaceBox | None:
    if box is None or isinstance(box, FaceBox):
        return box
    left, top, right, bottom = (int(v) for v in box)
    return FaceBox(left=left, top=top, right=right, bottom=bottom)


def pad_score_bgr(frame_bgr: npt.NDArray[np.uint8], box: BoxLike) -> CheckResult:
    """PAD result for a (H, W, 3) uint8 BGR frame; box = (left, top, right, bottom) pixels or None."""
    engine = _state.get("engine")
    if engine is None:
        return CheckResult(
            kind=CheckKind.PAD,
            outcome=Outcome.TECHNICAL,
            code="pad_worker_not_initialised",
            message="The anti-spoofing worker was started without its models.",
        )
    if isinstance(engine, CheckResult):
        return engine
    result: CheckResult = engine.score_bgr(frame_bgr, _to_box(box))
    return result


def pad_score_rgb(frame_rgb: npt.NDArray[np.uint8], box: BoxLike) -> CheckResult:
    """PAD result for a (H, W, 3) uint8 RGB frame (the models want BGR; converted here)."""
    return pad_score_bgr(np.ascontiguousarray(frame_rgb[:, :, ::-1]), box)
