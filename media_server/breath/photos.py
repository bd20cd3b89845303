"""Breath photos: analysed in the worker pool, judged against the template and earlier photos."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.results import TemplateError, template_from_bytes
from media_server.breath.adapters import DbPhotoIndex
from media_server.db.engine import make_session_factory, read_only
from media_server.db.enums import ArtifactKind, Modality
from media_server.db.models import (
    Artifact,
)
from media_server.evidence.port import EvidenceError
from media_server.gallery import active_template
from media_server.jobs import run_engine
from media_server.services import Services
from sobriety.config import SobrietySettings
from sobriety.photos import PhotoIndex, PhotoMatch, judge_breath_photos, phash_hex
from sobriety.reuse import ReuseComparison
from sobriety.worker import PhotoJobResult, analyse_photos_job

log = logging.getLogger("kuzet.breath")


def _gallery(
    services: Services, person_id: str
) -> tuple[npt.NDArray[np.float32], ModelStamp | None, CheckResult | None]:
    """(template embeddings (n, 128) or (0, 128), its model stamp, a problem result) for the person."""
    empty = np.zeros((0, 128), dtype=np.float32)
    raw = active_template(services, person_id, Modality.FACE)
    if raw is None:
        return (
            empty,
            None,
            CheckResult(
                CheckKind.FACE,
                Outcome.INCONCLUSIVE,
                "not_enrolled",
                "No face enrolment for this person: an officer must enrol before breath photos can be matched.",
            ),
        )
    try:
        template = template_from_bytes(raw)
    except TemplateError as exc:
        return (
            empty,
            None,
            CheckResult(
                CheckKind.FACE,
                Outcome.TECHNICAL,
                "template_unreadable",
                "The stored face enrolment could not be read; the person must be re-enrolled.",
                details={"error": str(exc)},
            ),
        )
    return template.embeddings, template.model, None


class _DeferredIndex:
    """A `PhotoIndex` that reads the database but holds back its writes: what each lookup found (to check
    it again under the write lock) and the fingerprints to add once the judgement is final."""

    def __init__(self, inner: DbPhotoIndex) -> None:
        self._inner = inner
        self.lookups: list[tuple[tuple[tuple[int, ...], str, int], frozenset[str]]] = []
        self.added: list[tuple[str, str, tuple[int, ...], str]] = []

    def find(self, hashes: tuple[int, ...], sha256: str, max_distance: int) -> list[PhotoMatch]:
        """The database's matches, remembered with the lookup that found them."""
        found = self._inner.find(hashes, sha256, max_distance)
        self.lookups.append(((hashes, sha256, max_distance), frozenset(m.photo_id for m in found)))
        return found

    def add(self, photo_id: str, test_id: str, hashes: tuple[int, ...], sha256: str) -> None:
        """Held back until the write transaction."""
        self.added.append((photo_id, test_id, hashes, sha256))

    def still_current(self, index: DbPhotoIndex) -> bool:
        """True when no lookup would find a photo now that it did not find then (none was added since)."""
        return all({m.photo_id for m in index.find(*lookup)} <= seen for lookup, seen in self.lookups)


def _judge_photos(
    services: Services, person_id: str, session_id: str, job: PhotoJobResult
) -> list[CheckResult]:
    """Reuse lookup + fingerprints and the per-photo results on the artifact rows.

    The reuse check (pixel comparisons with earlier photos, ~0.5 s each) runs on a read-only snapshot,
    so it holds no write lock (on SQLite every writer would queue behind it). The write transaction then
    repeats each fingerprint lookup: when a concurrent test added a near-duplicate photo meanwhile, the
    judgement is made again under the lock, so two tests can never miss each other's photos; it reuses the
    snapshot's pixel comparisons and compares only the photos that appeared meanwhile."""
    settings: SobrietySettings = services.settings.sobriety

    def judge(db: Session, index: PhotoIndex) -> list[CheckResult]:
        def earlier(photo_id: str) -> bytes | None:
            """An earlier photo's stored bytes, for telling a re-sent copy from a new moment."""
            row = db.get(Artifact, photo_id)
            if row is None:
                return None
            try:
                return services.store.get_bytes(row.key, version_id=row.version_id)
            except EvidenceError:
                return None  # a near duplicate then stays INCONCLUSIVE (review)

        return judge_breath_photos(
            job.analyses, index, session_id, settings, earlier=earlier, comparisons=compared
        )

    compared: dict[tuple[str, str], ReuseComparison] = {}  # a second judgement compares only new photos

    with make_session_factory(read_only(services.engine))() as snapshot:
        deferred = _DeferredIndex(DbPhotoIndex(snapshot, person_id))
        checks = judge(snapshot, deferred)
    with services.sessions.begin() as db:
        index = DbPhotoIndex(db, person_id)
        if deferred.still_current(index):
            for photo_id, test_id, hashes, sha256 in deferred.added:
                index.add(photo_id, test_id, hashes, sha256)
        else:  # a concurrent test's photo appeared: judge again, holding the lock
            log.info("breath photo reuse judged again under the lock", extra={"session_id": session_id})
            checks = judge(db, index)
        per_photo = {a.photo_id: a for a in job.analyses}
        bad = {str(c.details.get("photo_id")): c for c in job.unreadable}
        for row in db.scalars(
            select(Artifact).where(Artifact.session_id == session_id, Artifact.kind == ArtifactKind.PHOTO)
        ):
            # Annotations live in the row's meta; the stored evidence bytes never change.
            if row.id in per_photo:
                a = per_photo[row.id]
                row.meta = {
                    **row.meta,
                    "phash": phash_hex(a.phash),
                    "checks": [c.to_dict() for c in a.checks],
                }
            elif row.id in bad:
                row.meta = {**row.meta, "checks": [bad[row.id].to_dict()]}
    return checks


def _unreadable_summary(job: PhotoJobResult, total: int) -> CheckResult | None:
    if not job.unreadable:
        return None
    ids = [c.details.get("photo_id") for c in job.unreadable]
    return CheckResult(
        CheckKind.BREATH_PHOTO,
        Outcome.TECHNICAL,
        "photos_unreadable",
        f"{len(ids)} of {total} photos could not be read; please take the test again.",
        details={"photos": [c.to_dict() for c in job.unreadable]},
    )


def _merge(parts: list[PhotoJobResult]) -> PhotoJobResult:
    """Per-photo job results, in upload order, as one test's result."""
    problem = next((p.problem for p in parts if p.problem is not None), None)
    if problem is not None:
        return PhotoJobResult(problem=problem)
    return PhotoJobResult(
        analyses=[a for p in parts for a in p.analyses],
        unreadable=[u for p in parts for u in p.unreadable],
    )


async def _photo_checks(
    services: Services, person_id: str, session_id: str, photos: list[tuple[str, bytes]]
) -> list[CheckResult]:
    settings: SobrietySettings = services.settings.sobriety
    gallery, model, problem = await asyncio.to_thread(_gallery, services, person_id)
    # One job per photo, all in flight at once: the pool spreads them over its processes.
    jobs = [
        run_engine(
            services,
            CheckKind.BREATH_PHOTO,
            analyse_photos_job,
            [photo],
            gallery,
            model,
            settings.model_dump(mode="json"),
        )
        for photo in photos
    ]
    got = await asyncio.gather(*jobs)
    crashed = next((g for g in got if isinstance(g, CheckResult)), None)
    if crashed is not None:  # the pool or a job crashed: technical, never a verdict
        return [crashed]
    job = _merge([g for g in got if isinstance(g, PhotoJobResult)])
    if job.problem is not None:
        return [job.problem]
    checks = await asyncio.to_thread(_judge_photos, services, person_id, session_id, job)
    unreadable = _unreadable_summary(job, len(photos))
    if unreadable is not None:
        checks.append(unreadable)
    if problem is not None:
        # Not enrolled / unreadable template: the photos were analysed without a gallery.
        checks = [c for c in checks if c.kind is not CheckKind.FACE] + [problem]
    return checks
