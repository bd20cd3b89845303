"""The review queue as queries: each session's latest verdict, and how many wait for a reviewer."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Select

from media_server.db.enums import Decision
from media_server.db.models import Review, Verdict


def latest_verdict_ids() -> Select[Any]:
    """A select of each session's latest verdict id (a later PASS, e.g. a re-run, replaces a flag)."""
    ranked = select(
        Verdict.id.label("verdict_id"),
        func.row_number()
        .over(partition_by=Verdict.session_id, order_by=(Verdict.created_at.desc(), Verdict.id.desc()))
        .label("rank"),
    ).subquery()
    return select(ranked.c.verdict_id).where(ranked.c.rank == 1)


def pending_review_count(db: Session) -> int:
    """Sessions whose latest verdict is REVIEW or FAIL and that no reviewer has decided yet."""
    count = db.scalar(
        select(func.count())
        .select_from(Verdict)
        .where(
            Verdict.id.in_(latest_verdict_ids()),
            Verdict.decision.in_([Decision.REVIEW, Decision.FAIL]),
            Verdict.id.not_in(select(Review.verdict_id)),
        )
    )
    return int(count or 0)


def queue_length_probe(sessions: sessionmaker[Session]) -> float:
    """The queue length for a Prometheus gauge computed on scrape; NaN when the database cannot answer."""
    try:
        with sessions() as db:
            return float(pending_review_count(db))
    except Exception:  # a scrape must not fail because the database is briefly away
        return math.nan
