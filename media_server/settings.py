"""One settings tree for the whole service (env prefix KUZET_, nested groups joined by `__`).

With no configuration at all the service runs on the embedded default: SQLite and a local evidence
directory under `data_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from identity.face.config import FaceSettings
from identity.liveness.config import LivenessSettings
from identity.pad.config import PadSettings
from identity.voice.config import VoiceSettings
from sobriety.config import SobrietySettings


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Group):
    """KUZET_DATABASE__URL: a SQLAlchemy URL. Empty means SQLite at `<data_dir>/kuzet.db`."""

    url: str = Field("", description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db.")
    echo_sql: bool = Field(False, description="Log every SQL statement (debugging only).")
    retry_after_s: int = Field(
        2,
        ge=1,
        le=300,
        description="Retry-After (seconds) sent with a 503 while the database is unreachable.",
    )


class S3Settings(_Group):
    """S3 evidence store (MinIO, Ceph RGW, AWS). Leave `endpoint` empty for the local directory store."""

    endpoint: str = Field("", description="host:port of the S3 server; empty = local evidence directory.")
    access_key: SecretStr = Field(SecretStr(""), description="S3 access key.")
    secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    secure: bool = Field(False, description="Use HTTPS to reach the S3 server.")
    region: str = Field("us-east-1", description="S3 region name.")
    bucket: str = Field("kuzet-evidence", min_length=3, max_length=63, description="Evidence bucket.")
    ca_file: str = Field("", description="CA bundle for a private TLS endpoint.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Connect/read timeout for one S3 request.")


class EvidenceSettings(_Group):
    """How evidence is kept, whichever store holds it."""

    retention_days: int = Field(
        365 * 3, ge=1, le=3650, description="Default COMPLIANCE retention for every stored artifact."
    )
    multipart_part_bytes: int = Field(
        16 * 1024 * 1024, ge=5 * 1024 * 1024, le=512 * 1024 * 1024, description="Multipart part size."
    )
    presign_expiry_s: int = Field(900, ge=10, le=7 * 86400, description="Lifetime of a presigned read URL.")
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, le=8 * 1024**3, description="Largest single upload accepted by the API."
    )
    spool_retry_s: float = Field(
        10.0, gt=0, le=3600, description="How often spooled artifacts are retried while S3 is unreachable."
    )
    signing_key_file: Path | None = Field(
        None,
        description="Ed25519 PKCS#8 PEM key every node signs evidence with (`kuzet evidence keygen`); "
        "the same as signing_key=file:PATH. Unset (and no signing_key) = "
        "<data_dir>/evidence_signing_key.pem, created on first use (one node only).",
    )
    signing_key: str = Field(
        "",
        max_length=4096,
        pattern=r"^((file|env|command):.+)?$",
        description="Evidence-signing key provider, the same on every node: `file:/path/key.pem`, "
        "`env:VARIABLE` (the PEM in that variable), or `command:/path/signer ARGS` (an external signer, "
        "e.g. a KMS/HSM client: `ARGS public-key` prints the base64 public key, `ARGS sign` signs stdin; "
        "the private key never lives on the node).",
    )
    signer_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest wait for the external signer command (one call)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> EvidenceSettings:
        if self.signing_key and self.signing_key_file is not None:
            raise ValueError("set evidence.signing_key or evidence.signing_key_file, not both")
        return self


class RedisSettings(_Group):
    """Coordination between media-server nodes (optional; one node needs none)."""

    url: str = Field("", description="redis://host:6379/0; empty = single node, no coordination.")
    lease_ttl_s: float = Field(
        180.0,
        ge=5,
        le=3600,
        description="A node that stops renewing loses the scheduler lease after this (> schedules.tick_s).",
    )


class NodeSettings(_Group):
    """This media node among several: WHIP sessions live in one process, so their URLs name it.

    With an `id`, a WHIP resource is `/whip/<id>.<token>` (absolute under `public_url` when set): a load
    balancer can route on it, and a GET/DELETE/PATCH that still reaches another node is forwarded to the
    owner named in `peers` (proxied, or a 307 redirect). No id = one node, resource ids without a prefix.
    """

    id: str = Field(
        "",
        max_length=32,
        pattern=r"^([a-z0-9][a-z0-9-]*)?$",
        description="This node's id (lower-case letters, digits, '-'), unique in the cluster; empty = one node.",
    )
    public_url: str = Field(
        "",
        max_length=300,
        pattern=r"^(https?://[^/?#\s]+)?$",
        description="Scheme://host[:port] clients reach this node at; WHIP Location URLs become absolute "
        "under it. Empty = a relative Location (any node behind the balancer forwards to the owner).",
    )
    peers: dict[str, str] = Field(
        default_factory=dict,
        description="The other nodes: id -> scheme://host[:port] this node reaches them at (JSON in env).",
    )
    forward: str = Field(
        "proxy",
        pattern="^(proxy|redirect)$",
        description="A WHIP request for another node's session: proxy it (the client's bearer never leaves "
        "the cluster) or answer 307 to the owner's URL (clients must resend the bearer to it).",
    )
    forward_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Timeout of one request forwarded to the owning node."
    )

    @model_validator(mode="after")
    def _peers_are_urls(self) -> NodeSettings:
        for name, url in self.peers.items():
            if not name or name == self.id or not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"node.peers: {name!r} -> {url!r} must be another node's id and an http(s) URL"
                )
        return self


class ModelsSettings(_Group):
    """Where weights live; every file is checked against models/manifest.json before load."""

    dir: Path = Field(Path("var/models"), description="Directory holding verified weights files.")


class WorkerSettings(_Group):
    """CPU-heavy engines run in a spawn process pool, never on the event loop."""

    processes: int = Field(
        2,
        ge=1,
        le=64,
        description="Worker processes for face/voice/PAD engines (per node or `kuzet worker`).",
    )
    warm_at_start: bool = Field(
        True,
        description="Start the in-process pool's workers and load their engines when the service starts "
        "(in the background: the service is up at once), so the first jobs do not pay ~2-5 s per worker.",
    )
    max_job_frame_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024 * 1024,
        le=96 * 1024 * 1024,
        description="Pixels (bytes) of the frames one analysis job carries, at most: a check-in's frames are "
        "analysed in several jobs, which also spreads one session over the workers. A 20 s check-in at the "
        "shipped sampling is ~280 frames, ~250 MB at 640x480: one message that large is refused by RabbitMQ "
        "(128 MiB by default) and would leave the session waiting for its job timeout.",
    )


class CelerySettings(_Group):
    """Analysis on Celery workers (`kuzet worker`). Empty broker = the in-process spawn pool."""

    broker_url: str = Field(
        "", description="AMQP broker, e.g. amqp://guest:guest@127.0.0.1:5672//; empty = in-process pool."
    )
    result_backend: str = Field(
        "", description="Celery result backend; empty = the Redis at KUZET_REDIS__URL (required then)."
    )
    queue: str = Field(
        "kuzet.analysis", min_length=1, max_length=200, description="Queue the analysis jobs go to."
    )
    job_timeout_s: float = Field(
        600, ge=5, le=3600, description="Longest wait for one analysis job (redeliveries included)."
    )
    result_poll_s: float = Field(
        0.05, ge=0.005, le=5, description="How often a waiting API node polls for a job's result."
    )
    result_expires_s: int = Field(
        3600, ge=60, le=7 * 86400, description="How long a job's result is kept in the backend."
    )


class AuthSettings(_Group):
    """Secrets that sign tokens and encrypt templates. Generated into data_dir when left empty."""

    secret_key: SecretStr = Field(SecretStr(""), description="HMAC key for sessions and check-in tokens.")
    template_key: SecretStr = Field(
        SecretStr(""), description="Base64 32-byte AES-GCM key that encrypts biometric templates at rest."
    )
    checkin_token_ttl_s: int = Field(
        3600, ge=60, le=7 * 86400, description="Lifetime of a one-time check-in link."
    )


class SecuritySettings(_Group):
    """Login throttling, cookies, /metrics exposure and TLS (env: KUZET_SECURITY__*)."""

    login_max_failures: int = Field(
        5, ge=1, le=100, description="Failed logins per username+IP before each new try has to wait."
    )
    login_backoff_base_s: float = Field(
        1.0, ge=0.1, le=60.0, description="Wait after the first failure over the limit; doubles each time."
    )
    login_backoff_max_s: float = Field(
        300.0, ge=1.0, le=3600.0, description="Longest wait between login attempts of one username+IP."
    )
    login_failure_window_s: float = Field(
        900.0, ge=60.0, le=86400.0, description="Failures older than this no longer count."
    )
    login_max_parallel_hashes: int = Field(
        4,
        ge=1,
        le=64,
        description="Password hashes computed at once (argon2id takes 64 MiB each); more logins queue.",
    )
    login_throttle_max_keys: int = Field(
        100_000, ge=100, le=10_000_000, description="Username+IP pairs remembered (oldest forgotten first)."
    )
    cookie_secure: str = Field(
        "auto",
        pattern="^(auto|always|never)$",
        description="Secure flag on cookies: auto = when the request came over HTTPS (or X-Forwarded-Proto).",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics only on this separate port (bind it to an internal interface).",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the separate metrics port binds.")
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="When set, /metrics on the main port needs `Authorization: Bearer <token>`.",
    )
    tls_certfile: Path | None = Field(None, description="PEM certificate chain: `kuzet serve` speaks HTTPS.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=2048,
        description="Peers whose X-Forwarded-For / X-Forwarded-Proto `kuzet serve` believes (comma-separated "
        "addresses or networks, '*' = any): the reverse proxy. From any other peer they are ignored, so a client "
        "cannot choose the address its failed logins are counted under.",
    )
    tls_keyfile: Path | None = Field(None, description="PEM private key of `tls_certfile`.")


class GallerySettings(_Group):
    """Adaptive face gallery: confidently passed sessions may refresh a person's template (audited)."""

    adaptive: bool = Field(True, description="Refresh face templates from confidently passed sessions.")
    confidence_ratio: float = Field(
        0.8,
        gt=0.3,
        le=1.0,
        description="Only a session whose fused face distance is at most this fraction of the PASS threshold "
        "may refresh the template (a margin against drifting towards an impostor).",
    )
    frames_per_update: int = Field(3, ge=1, le=10, description="Best frames added per refresh.")
    max_adaptive_embeddings: int = Field(
        12,
        ge=0,
        le=100,
        description="Adaptive embeddings kept beside the enrolled ones (oldest dropped first).",
    )
    superseded_templates_kept: int = Field(
        0,
        ge=0,
        le=10,
        description="Superseded templates kept per person and modality (for rollback); older ones are "
        "deleted from storage when a new template is saved.",
    )


class MediaSettings(_Group):
    """WebRTC ingest."""

    ice_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN URLs; none by default for closed networks."
    )
    sample_every_s: float = Field(
        0.2,
        gt=0,
        le=10,
        description="Video sampling period outside challenge windows (lead-in, pauses): the face check and "
        "live feedback need only a few frames per second there.",
    )
    window_max_fps: float = Field(
        15.0,
        ge=5,
        le=60,
        description="Inside a challenge window (from liveness.baseline_s before a prompt to the end of its "
        "response window) every received frame is kept up to this rate (frames/s). The blink check was "
        "measured at 15 frames/s on real clips (benchmarks/liveness_clips.py); a faster camera is thinned "
        "evenly to this rate, a slower one keeps every frame.",
    )
    max_session_s: float = Field(120, ge=5, le=3600, description="Longest check-in session.")
    no_media_timeout_s: float = Field(
        15, ge=1, le=300, description="A session with no media after this long ends as a technical failure."
    )
    loopback_only: bool = Field(False, description="Offer only 127.0.0.1 ICE candidates (tests).")
    max_offer_bytes: int = Field(
        64 * 1024, ge=1024, le=1024 * 1024, description="Largest SDP offer accepted by POST /whip."
    )
    max_sampled_frames: int = Field(
        400,
        ge=4,
        le=2000,
        description="Without live analysis (a node wired with none, e.g. the WHIP test kit): hard cap on "
        "frames held per live session (memory: about 0.9 MB each at 640x480). With it, max_pending_frames and "
        "max_held_frames bound a session instead. "
        "The default challenge (~19 s) at window_max_fps needs ~290; when full, frames outside challenge "
        "windows are no longer kept, and inside windows the oldest out-of-window frame is released first. "
        "All frames are released when the session ends.",
    )
    outcome_linger_s: float = Field(
        30, ge=1, le=600, description="How long a finished session waits for the client's DELETE."
    )
    record_mode: Literal["remux", "reencode"] = Field(
        "remux",
        description="remux: store the received VP8/H.264 and Opus frames as they are (WebM/Matroska, no "
        "transcoding); reencode: decode and re-encode to H.264/AAC MP4 (the fallback, used anyway for a "
        "codec that cannot be remuxed).",
    )
    record_gap_jump_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="A jump in a stream's RTP time longer than this without lost packets (the sender "
        "paused) is recorded as a recording gap.",
    )
    record_max_gap_events: int = Field(
        200, ge=1, le=10_000, description="Recording-gap events kept per session (all are counted)."
    )
    record_preset: str = Field(
        "veryfast",
        pattern="^(ultrafast|superfast|veryfast|faster|fast|medium)$",
        description="libx264 preset of the re-encoded recording (faster presets cost less CPU).",
    )
    record_crf: int = Field(
        26, ge=0, le=51, description="libx264 constant rate factor of the re-encoded recording."
    )
    record_queue_s: float = Field(
        2.0, gt=0, le=30, description="Media the recorder thread may lag behind before frames are dropped."
    )
    feedback_dark_luma: float = Field(
        40, ge=0, le=255, description="Mean luma (0-255) below which the client is told it is too dark."
    )
    feedback_bright_luma: float = Field(
        235, ge=0, le=255, description="Mean luma (0-255) above which the client is told it is too bright."
    )
    feedback_min_face_px: int = Field(
        96, ge=16, le=1024, description="Smallest face side (px, full frame) the live face hint looks for."
    )
    feedback_every_s: float = Field(
        0.5,
        ge=0.05,
        le=10,
        description="How often a sampled frame is given the live hint check (Haar face + brightness).",
    )
    feedback_hold_s: float = Field(
        2.0,
        ge=0.0,
        le=30,
        description="A problem hint (face not visible, too dark, ...) is sent only after every hint check "
        "for this long saw it; a single missed detection (a turned head, motion blur) sends nothing.",
    )
    max_message_bytes: int = Field(
        4096, ge=256, le=65536, description="Largest data-channel message accepted from a client."
    )
    max_events: int = Field(
        500, ge=10, le=10000, description="Data-channel events kept per session (the rest are counted)."
    )
    max_live_sessions: int = Field(
        0,
        ge=0,
        le=1000,
        description="Sessions this node serves at once (live or still being judged); one more WHIP offer is "
        "refused with 503 + Retry-After before its link is spent, and the check-in page retries. 0 = one per "
        "CPU core of this node (`live_session_capacity`): benchmarks/media_sessions.py on the 2-core reference "
        "machine measured about 0.8 of a core per 19 s check-in with live analysis (media process plus "
        "analysis workers), so a core per session keeps up with the camera. Set it from the node's own "
        "measurement (the benchmark prints where refusals start).",
    )
    busy_retry_after_s: int = Field(
        5, ge=1, le=300, description="Retry-After (seconds) sent with a 503 when the node is at capacity."
    )
    analysis_chunk_frames: int = Field(
        8,
        ge=1,
        le=64,
        description="Sampled frames sent to the analysis pool in one job while the session runs (landmarks, "
        "face box, quality; no embedding). Larger chunks cost fewer round trips, smaller ones less latency.",
    )
    max_pending_frames: int = Field(
        90,
        ge=4,
        le=600,
        description="Sampled frames one live session may hold waiting for analysis (about 0.9 MB each at "
        "640x480; 90 = 6 s of a challenge window at 15 fps). When the pool falls this far behind, new frames "
        "are not analysed (counted as frames_analysis_dropped): a bounded loss instead of unbounded memory. "
        "While any session's queue is over half full the node admits no new session.",
    )
    held_frame_every_s: float = Field(
        1.5,
        gt=0,
        le=60,
        description="Of each interval this long the session keeps one analysed frame (the best by face "
        "quality): the evidence frames and the candidates for the face embedding.",
    )
    max_held_frames: int = Field(
        16,
        ge=3,
        le=200,
        description="Most analysed frames one live session holds (the best by quality are kept); all are "
        "released when the session has been judged.",
    )
    embed_best_frames: int = Field(
        5,
        ge=1,
        le=50,
        description="Held frames (best quality first, quality gate passed) whose face embedding is computed, "
        "while the session runs as their interval closes, the rest when it ends; the face decision fuses "
        "face.session_top_k of them and needs face.session_min_frames. benchmarks/best_frames.py on the 8 "
        "shared clips (8 genuine, 56 impostor trials): 3, 5 and 8 best frames give the same decisions as the "
        "16 evenly spread frames encoded before (max genuine distance 0.020 vs 0.022, min impostor 0.075 vs "
        "0.073); 1 is too few. 5 keeps a margin of two frames for a gate failure at the same cost as top_k.",
    )
    malloc_mmap_threshold_kb: int = Field(
        128,
        ge=0,
        le=32768,
        description="glibc only: allocations at least this large (decoded and RGB frames, ~0.45-0.9 MB at "
        "640x480; pickled analysis chunks) get their own mapping and go back to the OS when freed. 0 leaves "
        "glibc's adaptive threshold, which rises to the largest block freed, so frames then live in malloc's "
        "per-thread arenas and their pages stay resident after the sessions end (malloc_trim does not "
        "shrink those arenas' tops). benchmarks/media_sessions.py --levels 1 2 4 8 (2-core machine): server "
        "RSS after the run +24 % of idle with the adaptive threshold, +15 % with 128 (peak unchanged); "
        "--memory-report showed malloc's arenas at 602 MB virtual with the adaptive threshold, 80 MB with 128.",
    )

    def live_session_capacity(self) -> int:
        """`max_live_sessions`, or one per CPU core this process may run on when it is 0."""
        if self.max_live_sessions:
            return self.max_live_sessions
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, cores)


class SchedulesSettings(_Group):
    """The scheduler tick: when sessions are created from rules and when a window counts as missed."""

    horizon_min: int = Field(
        60, ge=1, le=10080, description="Sessions are created for windows starting this many minutes ahead."
    )
    missed_grace_s: int = Field(
        300, ge=0, le=86400, description="A window is booked as missed this long after it ends unattended."
    )
    tick_s: float = Field(60, ge=5, le=3600, description="How often the scheduler tick runs.")
    on_demand_duration_min: int = Field(
        30, ge=5, le=24 * 60, description="Length of an on-demand test window an officer requests."
    )
    retake_window_min: int = Field(
        60, ge=5, le=24 * 60, description="Length of the window of a fresh link issued after our failure."
    )
    max_automatic_retakes: int = Field(
        2,
        ge=0,
        le=10,
        description="Fresh links issued automatically in a row after technical failures (then an officer "
        "resends by hand).",
    )
    open_window_min_left_min: int = Field(
        15,
        ge=1,
        le=24 * 60,
        description="A schedule created while one of its windows is open still gets that window when at "
        "least this many minutes of it remain (less: the person could not reasonably take it, so it is skipped).",
    )
    recovery_grace_s: int = Field(
        120,
        ge=10,
        le=86400,
        description="A session with stored evidence but no verdict this long after it should have been "
        "judged (a breath test after arrival; a check-in after its longest possible end) is re-judged by the "
        "recovery sweep (at start and on the leader's tick).",
    )


WEBHOOK_SECRET_MIN_CHARS = 16


class WebhookSettings(_Group):
    """Verdict and violation events POSTed (HMAC-SHA256 signed) to the case system."""

    urls: list[str] = Field(default_factory=list, description="Receiver URLs; none = webhooks off.")
    secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key for the X-Kuzet-Signature header.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of one delivery attempt.")
    max_attempts: int = Field(5, ge=1, le=20, description="Delivery attempts per URL before giving up.")
    backoff_initial_s: float = Field(1.0, gt=0, le=60, description="Wait before the first retry; doubles.")
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between two attempts.")

    @model_validator(mode="after")
    def _secret_with_urls(self) -> WebhookSettings:
        # An empty key signs with HMAC(b"", ...): anyone could forge events. Refuse to start instead.
        if self.urls and len(self.secret.get_secret_value()) < WEBHOOK_SECRET_MIN_CHARS:
            raise ValueError(
                f"webhooks.secret must be set (at least {WEBHOOK_SECRET_MIN_CHARS} characters) "
                "when webhooks.urls are configured"
            )
        return self


class RetentionSettings(_Group):
    """How long personal data is held (see README "Personal data")."""

    after_supervision_days: int = Field(
        365 * 3,
        ge=0,
        le=3650,
        description="Days after the order's end date (supervision_ended_on) until a person is erased.",
    )
    unattributed_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="Days the bytes of a rejected submission that belongs to no person are kept.",
    )


class CallSettings(_Group):
    """The officer's live identification call and watching a check-in (media_server.calls)."""

    link_valid_min: int = Field(
        15, ge=1, le=24 * 60, description="How long the person's one-time call link stays valid (minutes)."
    )
    max_call_s: float = Field(
        1800, ge=30, le=3600, description="Longest call; the person's session then ends on its own."
    )
    live_check_every_s: float = Field(
        3.0,
        ge=0.5,
        le=60,
        description="How often one frame of the person's live video is face-checked for the officer's "
        "screen (one worker job each; the session's own checks run on all sampled frames at the end).",
    )
    live_results_kept: int = Field(
        50, ge=1, le=1000, description="Live face results kept per call for the officer's screen."
    )
    verdict_wait_s: float = Field(
        180,
        ge=1,
        le=1800,
        description="How long ending a call waits for the person's checks and verdict before it answers "
        "409 (the decision is then recorded by posting it again).",
    )
    max_subscribers: int = Field(
        8, ge=1, le=100, description="Most WHEP viewers of one live session (each costs an encoder)."
    )


class LocationSettings(_Group):
    """Position reports, zones and device events (media_server.location).

    The jitter rule: a fix counts as inside (outside) a zone only when its whole accuracy circle is inside
    (outside); a violation needs `min_fixes` consecutive such fixes spanning at least `min_duration_s`.
    The defaults are engineering choices, not measured on field data (none is available here): an agency
    should tune them on its own devices' tracks.
    """

    min_fixes: int = Field(
        3, ge=1, le=100, description="Consecutive fixes wholly on the wrong side of a zone for a violation."
    )
    min_duration_s: float = Field(
        60.0, ge=0, le=6 * 3600, description="Time from the first to the last of those fixes, at least."
    )
    max_gap_s: float = Field(
        600.0,
        ge=1,
        le=86400,
        description="Two consecutive fixes further apart than this do not make one run (a tracking gap).",
    )
    max_accuracy_m: float = Field(
        150.0,
        gt=0,
        le=10000,
        description="Fixes with a worse accuracy (radius, m) are stored but never count for or against a zone.",
    )
    reevaluate_window_s: float = Field(
        3600.0,
        ge=60,
        le=7 * 86400,
        description="After a batch, positions this far before and after its fixes are re-evaluated in time "
        "order; at least min_duration_s + min_fixes * max_gap_s, so any breach a new fix belongs to is seen.",
    )
    max_position_age_days: int = Field(
        30,
        ge=1,
        le=365,
        description="Fixes older than this are refused (late batches up to it are accepted).",
    )
    max_batch_positions: int = Field(
        500, ge=1, le=10000, description="Positions in one signed batch, at most."
    )
    max_batch_events: int = Field(100, ge=1, le=1000, description="Events in one signed batch, at most.")
    max_body_bytes: int = Field(
        512 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest position or event request body."
    )
    max_zones_per_person: int = Field(50, ge=1, le=1000, description="Active zones per person, at most.")
    max_polygon_vertices: int = Field(
        2000, ge=3, le=100000, description="Vertices of one polygon zone, at most."
    )
    min_circle_radius_m: float = Field(10.0, gt=0, le=1000, description="Smallest circle zone radius (m).")
    page_report_every_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="How often an open check-in or call page reports the phone's position (the first at once).",
    )
    page_report_grace_s: float = Field(
        600.0,
        ge=0,
        le=86400,
        description="A page may still report positions this long after its session ended (it stays open).",
    )
    page_max_fixes: int = Field(20, ge=1, le=1000, description="Positions in one page report, at most.")
    page_max_clock_skew_s: float = Field(
        120.0, ge=0, le=3600, description="How far in the future a page's fix time may lie (phone clock)."
    )
    max_zone_extent_m: float = Field(
        50_000.0,
        ge=100,
        le=500_000,
        description="Largest circle radius / polygon extent from its centre (m); beyond it the local "
        "projection's scale error grows.",
    )

    @model_validator(mode="after")
    def _window_covers_a_breach(self) -> LocationSettings:
        needed = self.min_duration_s + self.min_fixes * self.max_gap_s
        if self.reevaluate_window_s < needed:
            raise ValueError(
                f"reevaluate_window_s ({self.reevaluate_window_s}) must be at least min_duration_s + "
                f"min_fixes * max_gap_s ({needed}) so a late fix's whole breach is re-evaluated"
            )
        return self


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="KUZET_", env_nested_delimiter="__", extra="forbid", env_file=None
    )

    data_dir: Path = Field(Path("var"), description="Local state: SQLite file, evidence dir, spool, keys.")
    host: str = Field("127.0.0.1", description="Address `kuzet serve` binds.")
    port: int = Field(8080, ge=1, le=65535, description="Port `kuzet serve` binds.")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$", description="Log level.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    schedules: SchedulesSettings = Field(default_factory=SchedulesSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    face: FaceSettings = Field(default_factory=FaceSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    pad: PadSettings = Field(default_factory=PadSettings)
    liveness: LivenessSettings = Field(default_factory=LivenessSettings)
    sobriety: SobrietySettings = Field(default_factory=SobrietySettings)
    location: LocationSettings = Field(default_factory=LocationSettings)
    calls: CallSettings = Field(default_factory=CallSettings)

    @property
    def database_url(self) -> str:
        """The effective SQLAlchemy URL (SQLite under data_dir when none is configured)."""
        return self.database.url or f"sqlite:///{(self.data_dir / 'kuzet.db').resolve()}"

    @property
    def evidence_dir(self) -> Path:
        """The local evidence directory (the embedded default store)."""
        return self.data_dir / "evidence"

    @property
    def spool_dir(self) -> Path:
        """Where artifacts wait while the S3 server is unreachable."""
        return self.data_dir / "spool"
