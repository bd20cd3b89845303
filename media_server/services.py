"""The composition root: every long-lived resource of a node, built once and passed typed.

`build_services(settings)` builds the real ports (database, evidence store, worker pool, webhook
notifier, keys); tests build the same `Services` with fakes. Flow modules import `Services` from here,
never from `media_server.app`, so the import graph points one way: app -> flows -> services -> ports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from media_server.evidence import build_store
from media_server.evidence.port import EvidenceStore
from media_server.keys import EvidenceSigner, ServiceKeys, load_or_create
from media_server.settings import Settings
from media_server.webhooks import WebhookNotifier
from media_server.workers import AnalysisPool, build_pool


@dataclass
class Metrics:
    """Per-app Prometheus registry (no module-level globals, so tests can build many apps)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "kuzet_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kuzet_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.verdicts = Counter(
            "kuzet_verdicts_total", "Verdicts written", ["decision"], registry=self.registry
        )
        self.spooled = Counter(
            "kuzet_evidence_spooled_total", "Artifacts spooled locally", registry=self.registry
        )
        self.dead_letters = Counter(
            "kuzet_webhook_dead_letters_total",
            "Webhook deliveries that failed for good (stored as dead letters)",
            ["event"],
            registry=self.registry,
        )
        self.review_queue = Gauge(
            "kuzet_review_queue_length",
            "Sessions waiting for a reviewer (counted on scrape)",
            registry=self.registry,
        )
        self.live_sessions = Gauge(
            "kuzet_webrtc_sessions_live", "WebRTC (WHIP) sessions open on this node", registry=self.registry
        )
        self.sessions_refused_busy = Counter(
            "kuzet_webrtc_sessions_refused_busy_total",
            "WHIP offers refused with 503 because this node was at media.max_live_sessions",
            registry=self.registry,
        )
        self.sessions_ended = Counter(
            "kuzet_webrtc_sessions_ended_total",
            "WebRTC sessions judged, by how they ended",
            ["reason"],
            registry=self.registry,
        )
        self.recording_dropped = Counter(
            "kuzet_recording_frames_dropped_total",
            "Frames the evidence recorder could not keep (a gap in the stored recording)",
            registry=self.registry,
        )
        self.analysis_dropped = Counter(
            "kuzet_live_analysis_frames_dropped_total",
            "Sampled frames live face analysis skipped because its queue was full (the pool fell behind)",
            registry=self.registry,
        )
        self.recording_gaps = Counter(
            "kuzet_recording_gaps_total",
            "Holes in stored session recordings (each is a recording_gap session event)",
            ["kind", "cause"],
            registry=self.registry,
        )
        self.recording_frames_missing = Counter(
            "kuzet_recording_frames_missing_total",
            "Frames missing from stored session recordings (lost on the network or by the recorder)",
            ["kind"],
            registry=self.registry,
        )
        self.recording_cpu = Counter(
            "kuzet_recording_cpu_seconds_total",
            "CPU time of the session recorder threads, by recording format (mp4 = re-encoded)",
            ["format"],
            registry=self.registry,
        )
        self.jobs_in_flight = Gauge(
            "kuzet_jobs_in_flight", "Engine jobs submitted and not yet answered", registry=self.registry
        )
        self.job_seconds = Histogram(
            "kuzet_job_seconds",
            "Engine job latency, submit to answer (queue wait included)",
            ["job", "outcome"],
            registry=self.registry,
        )


@dataclass
class Services:
    """Long-lived resources built in the lifespan and injected into handlers."""

    settings: Settings
    keys: ServiceKeys
    engine: Engine
    sessions: sessionmaker[Session]
    store: EvidenceStore
    workers: AnalysisPool
    metrics: Metrics
    notifier: WebhookNotifier
    # The evidence signer (a key loaded once, or an external signer holding it; never read per verdict).
    signing_key: EvidenceSigner
    background: list[asyncio.Task[Any]] = field(default_factory=list)


def build_services(settings: Settings) -> Services:
    """Build every resource (database migrated to head, evidence store, worker pool)."""
    from media_server.db.engine import make_engine, make_session_factory
    from media_server.db.migrate import upgrade
    from media_server.dead_letters import DbDeadLetters
    from media_server.review_queue import queue_length_probe

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    keys = load_or_create(settings)
    metrics = Metrics()
    metrics.review_queue.set_function(lambda: queue_length_probe(sessions))
    return Services(
        settings=settings,
        keys=keys,
        engine=engine,
        sessions=sessions,
        store=build_store(settings),
        workers=build_pool(settings),
        metrics=metrics,
        notifier=WebhookNotifier(
            settings.webhooks, dead_letters=DbDeadLetters(sessions, metrics.dead_letters)
        ),
        signing_key=keys.evidence_key(),
    )
