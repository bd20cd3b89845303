"""One settings tree for the whole service (env prefix KUZET_, nested groups joined by `__`).

With no configuration at all the service runs on the embedded default: SQLite and a local evidence
directory under `data_dir`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from identity.face.config import FaceSettings
from identity.pad.config import PadSettings
from identity.voice.config import VoiceSettings
from sobriety.config import SobrietySettings


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Group):
    """KUZET_DATABASE__URL: a SQLAlchemy URL. Empty means SQLite at `<data_dir>/kuzet.db`."""

    url: str = Field("", description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db.")
    echo_sql: bool = Field(False, description="Log every SQL statement (debugging only).")


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


class ModelsSettings(_Group):
    """Where weights live; every file is checked against models/manifest.json before load."""

    dir: Path = Field(Path("var/models"), description="Directory holding verified weights files.")


class WorkerSettings(_Group):
    """CPU-heavy engines run in a spawn process pool, never on the event loop."""

    processes: int = Field(2, ge=1, le=64, description="Worker processes for face/voice/PAD engines.")


class AuthSettings(_Group):
    """Secrets that sign tokens and encrypt templates. Generated into data_dir when left empty."""

    secret_key: SecretStr = Field(SecretStr(""), description="HMAC key for sessions and check-in tokens.")
    template_key: SecretStr = Field(
        SecretStr(""), description="Base64 32-byte AES-GCM key that encrypts biometric templates at rest."
    )
    checkin_token_ttl_s: int = Field(
        3600, ge=60, le=7 * 86400, description="Lifetime of a one-time check-in link."
    )


class MediaSettings(_Group):
    """WebRTC ingest."""

    ice_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN URLs; none by default for closed networks."
    )
    sample_every_s: float = Field(0.5, gt=0, le=10, description="Video frame sampling period for analysis.")
    max_session_s: float = Field(120, ge=5, le=3600, description="Longest check-in session.")
    no_media_timeout_s: float = Field(
        15, ge=1, le=300, description="A session with no media after this long ends as a technical failure."
    )
    loopback_only: bool = Field(False, description="Offer only 127.0.0.1 ICE candidates (tests).")


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
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    face: FaceSettings = Field(default_factory=FaceSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    pad: PadSettings = Field(default_factory=PadSettings)
    sobriety: SobrietySettings = Field(default_factory=SobrietySettings)

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
