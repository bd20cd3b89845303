"""`finish_session`: evidence, checks, verdict, reply; the gallery update runs after the reply."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from identity.checks import CheckResult
from media_server.checkin.checks import annotate_frames, run_checkin_checks
from media_server.checkin.evidence import store_capture_evidence
from media_server.checkin.gallery_update import adapt_gallery
from media_server.services import Services
from media_server.verdict import VerdictOutcome, announce, write_verdict
from media_server.webrtc.capture import SessionCapture

log = logging.getLogger("kuzet.checkin")


async def finish_session(services: Services, capture: SessionCapture) -> dict[str, Any]:
    """The session sink: evidence, checks, verdict. Returns the outcome the check-in page shows.

    The adaptive-gallery update is slow (a face enrolment job) and changes nothing the person is told,
    so it runs after the reply, tracked in `services.background` until it ends.
    """
    await asyncio.to_thread(store_capture_evidence, services, capture)
    checks = await run_checkin_checks(services, capture)
    await asyncio.to_thread(annotate_frames, services, capture.session_id, checks.results)
    outcome, verdict_id = await asyncio.to_thread(
        write_verdict, services, capture.session_id, checks.results, checks.required
    )
    announce(services, capture.session_id, capture.person_id, capture.kind, outcome, verdict_id)
    follow_up = asyncio.create_task(_gallery_follow_up(services, capture, checks.results, outcome))
    services.background.append(follow_up)
    follow_up.add_done_callback(lambda t: services.background.remove(t) if t in services.background else None)
    return {
        "decision": outcome.decision.value,
        "retake": outcome.retake_offered,
        "reasons": outcome.reasons,
        "session_id": capture.session_id,
    }


async def _gallery_follow_up(
    services: Services, capture: SessionCapture, results: list[CheckResult], outcome: VerdictOutcome
) -> None:
    try:
        await adapt_gallery(services, capture, results, outcome)
    except Exception:
        log.exception("adaptive gallery update failed", extra={"session_id": capture.session_id})
