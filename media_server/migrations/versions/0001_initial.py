"""Initial schema: people, accounts, devices, sessions, evidence, verdicts, and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Self-contained on purpose (no imports from the models): a migration describes the schema as it was.
Enums are VARCHAR(32) holding the StrEnum value; timestamps are timezone-aware and stored UTC.

audit_log is append-only: a trigger refuses UPDATE, DELETE (and TRUNCATE on PostgreSQL). A superuser
can still drop or disable the trigger (or run with session_replication_role=replica); such an edit
is then detected by `kuzet audit verify`, because every row's hash covers its content and its
predecessor's hash.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY_MESSAGE = "audit_log is append-only"


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), nullable=False)


def _ref(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(36), nullable=nullable)


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _enum(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(32), nullable=False)


def _sha(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(64), nullable=nullable)


def _fk(col: str, table: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([col], [f"{target}.id"], name=f"fk_{table}_{col}_{target}")


def _index(table: str, *cols: str) -> None:
    op.create_index(f"ix_{table}_{'_'.join(cols)}", table, list(cols))


def upgrade() -> None:
    op.create_table(
        "persons",
        _id(),
        sa.Column("external_ref", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("erased_at", nullable=True),
        _ts("retention_until", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_persons"),
        sa.UniqueConstraint("external_ref", name="uq_persons_external_ref"),
    )

    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _enum("role"),
        _ref("person_id", nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _fk("person_id", "users", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    _index("users", "person_id")

    op.create_table(
        "enrolments",
        _id(),
        _ref("person_id"),
        _enum("modality"),
        sa.Column("template_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("template_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        _sha("weights_sha256"),
        _enum("source"),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("n_samples >= 1", name="ck_enrolments_n_samples_positive"),
        _fk("person_id", "enrolments", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_enrolments"),
    )
    _index("enrolments", "person_id")

    op.create_table(
        "devices",
        _id(),
        sa.Column("serial", sa.String(64), nullable=False),
        _enum("kind"),
        _ref("person_id", nullable=True),
        sa.Column("public_key_b64", sa.String(64), nullable=True),
        _sha("key_hash", nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _fk("person_id", "devices", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("serial", name="uq_devices_serial"),
    )
    _index("devices", "person_id")

    op.create_table(
        "schedules",
        _id(),
        _ref("person_id"),
        _enum("kind"),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ref("created_by", nullable=True),
        _ts("created_at"),
        _fk("person_id", "schedules", "persons"),
        _fk("created_by", "schedules", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    _index("schedules", "person_id")
    _index("schedules", "created_by")

    op.create_table(
        "sessions",
        _id(),
        _ref("person_id"),
        _enum("kind"),
        _enum("status"),
        _ts("window_start"),
        _ts("window_end"),
        _ts("started_at", nullable=True),
        _ts("ended_at", nullable=True),
        _sha("token_hash", nullable=True),
        _ts("token_used_at", nullable=True),
        _ref("device_id", nullable=True),
        sa.Column("location", sa.JSON(), nullable=True),
        sa.Column("challenge", sa.JSON(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("window_end >= window_start", name="ck_sessions_window_ordered"),
        _fk("person_id", "sessions", "persons"),
        _fk("device_id", "sessions", "devices"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
    )
    _index("sessions", "person_id")
    _index("sessions", "device_id")
    _index("sessions", "status")

    op.create_table(
        "artifacts",
        _id(),
        _ref("session_id"),
        sa.Column("key", sa.String(512), nullable=False),
        _sha("sha256"),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        _enum("kind"),
        sa.Column("spooled", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("session_id", "artifacts", "sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
    )
    _index("artifacts", "session_id")

    op.create_table(
        "check_results",
        _id(),
        _ref("session_id"),
        _enum("kind"),
        _enum("outcome"),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("model_name", sa.String(64), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        _sha("weights_sha256", nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("session_id", "check_results", "sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_check_results"),
    )
    _index("check_results", "session_id")

    op.create_table(
        "verdicts",
        _id(),
        _ref("session_id"),
        _enum("decision"),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("retake_offered", sa.Boolean(), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        _sha("manifest_sha256"),
        _ts("created_at"),
        _fk("session_id", "verdicts", "sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_verdicts"),
    )
    _index("verdicts", "session_id")
    _index("verdicts", "decision")

    op.create_table(
        "reviews",
        _id(),
        _ref("session_id"),
        _ref("verdict_id"),
        _ref("reviewer_id"),
        _enum("decision"),
        sa.Column("comment", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("length(trim(comment)) > 0", name="ck_reviews_comment_not_empty"),
        _fk("session_id", "reviews", "sessions"),
        _fk("verdict_id", "reviews", "verdicts"),
        _fk("reviewer_id", "reviews", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    _index("reviews", "session_id")
    _index("reviews", "verdict_id")
    _index("reviews", "reviewer_id")

    op.create_table(
        "breath_nonces",
        _ref("device_id"),
        sa.Column("nonce", sa.String(128), nullable=False),
        _ts("seen_at"),
        _fk("device_id", "breath_nonces", "devices"),
        sa.PrimaryKeyConstraint("device_id", "nonce", name="pk_breath_nonces"),
    )
    _index("breath_nonces", "seen_at")

    op.create_table(
        "photo_fingerprints",
        _id(),
        _ref("artifact_id"),
        _ref("session_id"),
        _ref("person_id"),
        sa.Column("phash", sa.String(64), nullable=False),
        _ts("created_at"),
        _fk("artifact_id", "photo_fingerprints", "artifacts"),
        _fk("session_id", "photo_fingerprints", "sessions"),
        _fk("person_id", "photo_fingerprints", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_photo_fingerprints"),
    )
    _index("photo_fingerprints", "artifact_id")
    _index("photo_fingerprints", "session_id")
    _index("photo_fingerprints", "person_id")
    _index("photo_fingerprints", "phash")

    op.create_table(
        "erasures",
        _id(),
        _ref("person_id"),  # not a foreign key: the proof outlives the data
        _ts("erased_at"),
        sa.Column("counts", sa.JSON(), nullable=False),
        _sha("proof_sha256"),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    _index("erasures", "person_id")

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _ts("ts"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        _sha("prev_hash"),
        _sha("row_hash"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        # Two rows naming the same predecessor would fork the chain.
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_subject", "audit_log", ["subject_type", "subject_id"])
    _install_append_only_triggers()


def _install_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}: {verb} refused'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for table in (
        "audit_log",
        "erasures",
        "photo_fingerprints",
        "breath_nonces",
        "reviews",
        "verdicts",
        "check_results",
        "artifacts",
        "sessions",
        "schedules",
        "devices",
        "enrolments",
        "users",
        "persons",
    ):
        op.drop_table(table)
