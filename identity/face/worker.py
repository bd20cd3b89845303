"""Worker-process entry points for a spawn ProcessPoolExecutor.

Usage (the service owns the pool)::

    pool = ProcessPoolExecutor(
        max_workers=n,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=identity.face.worker.init_worker,
        initargs=(str(settings.models.dir), settings.face.model_dump(mode="json")),
    )
    result = await loop.run_in_executor(pool, identity.face.worker.verify_frames, template, frames)

Importing this module is light; dlib is loaded by `init_worker` inside the worker. The engine is a
per-process singleton because a pool initializer can only hand state to later calls through the
worker's module namespace; it is never created in the API process. Arguments and results are plain
picklable values (numpy arrays, dataclasses, CheckResult).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity.checks import CheckResult
from identity.face.config import FaceSettings
from identity.face.results import FaceAnalysis, Template

if TYPE_CHECKING:
    from identity.face.engine import FaceEngine

_ENGINE: FaceEngine | None = None


def init_worker(models_dir: str, settings: dict[str, Any]) -> None:
    """Pool initializer: build this process's FaceEngine (verifies weights; loads dlib models)."""
    global _ENGINE
    from identity.face.engine import FaceEngine

    _ENGINE = FaceEngine(Path(models_dir), FaceSettings.model_validate(settings))


def _engine() -> FaceEngine:
    if _ENGINE is None:
        raise RuntimeError("face worker not initialised: use init_worker as the pool initializer")
    return _ENGINE


def current_engine() -> FaceEngine:
    """This worker process's FaceEngine, for other engine jobs that reuse it (e.g. breath photos)."""
    return _engine()


def analyse_image(rgb: Any) -> FaceAnalysis:
    """Faces (boxes, 68 landmarks), quality gate and embedding of one uint8 RGB (H, W, 3) image."""
    return _engine().analyse(rgb)


def analyse_frames(frames: list[Any]) -> list[FaceAnalysis]:
    """Per-frame analyses of RGB frames (near-duplicates reuse the previous analysis)."""
    return _engine().analyse_frames(frames)[0]


def analyse_live(frames: list[Any]) -> list[FaceAnalysis]:
    """Per-frame faces, 68 landmarks and quality of a chunk of live RGB frames, without embeddings.

    `reused_from` indexes within this chunk. Every frame gets its own landmarks (liveness reads them)."""
    return _engine().analyse_frames(frames, encode=False)[0]


def embed_analyses(frames: list[Any], analyses: list[FaceAnalysis]) -> list[FaceAnalysis]:
    """The analyses of chosen frames with the primary face's embedding added (frames[i] made analyses[i])."""
    return _engine().embed_analyses(frames, analyses)


def enrol(images: list[Any], previous: Template | None = None) -> tuple[Template | None, list[CheckResult]]:
    """Template from several RGB images; results[i] judges images[i], the last one is the summary."""
    return _engine().enrol(images, previous)


def verify_image(template: Template, rgb: Any) -> CheckResult:
    """One RGB image against a template."""
    return _engine().verify_image(template, rgb)


def verify_frames(template: Template, frames: list[Any]) -> CheckResult:
    """A session's RGB frames against a template (best-frame fusion; per-frame boxes/scores in details)."""
    return _engine().verify_frames(template, frames)


def verify_analyses(template: Template, analyses: list[FaceAnalysis]) -> CheckResult:
    """Session decision from `analyse_frames` output (no second detection/encoding of the frames)."""
    return _engine().verify_analyses(template, analyses)
