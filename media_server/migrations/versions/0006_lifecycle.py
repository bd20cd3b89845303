"""A person's life cycle; rejected submissions as owned evidence; webhook dead letters.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

* `persons.status` (VARCHAR 32, default 'active'): active -> supervision_ended -> erased. Rows that
  already carry `erased_at` become 'erased'.
* `persons.supervision_ended_on` (DATE, nullable): the order's end date; the retention clock starts there.
* `rejections` / `rejection_artifacts`: a submission refused before it belonged to a session (unknown
  device, bad signature, ...) and the objects its bytes were stored as, so retention and erasure cover them.
* `webhook_dead_letters`: deliveries that failed for good, with the exact body, for admins to retry.

Self-contained on purpose (no imports from the models). SQLite alters tables through batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("status", sa.String(32), nullable=False, server_default="active"))
        batch.add_column(sa.Column("supervision_ended_on", sa.Date(), nullable=True))
    op.execute("UPDATE persons SET status = 'erased' WHERE erased_at IS NOT NULL")

    op.create_table(
        "rejections",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=True),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_rejections_device_id_devices"),
        sa.ForeignKeyConstraint(["person_id"], ["persons.id"], name="fk_rejections_person_id_persons"),
        sa.PrimaryKeyConstraint("id", name="pk_rejections"),
    )
    op.create_index("ix_rejections_device_id", "rejections", ["device_id"])
    op.create_index("ix_rejections_person_id", "rejections", ["person_id"])

    op.create_table(
        "rejection_artifacts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("rejection_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("what", sa.String(64), nullable=False),
        sa.Column("spooled", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["rejection_id"], ["rejections.id"], name="fk_rejection_artifacts_rejection_id_rejections"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rejection_artifacts"),
    )
    op.create_index("ix_rejection_artifacts_rejection_id", "rejection_artifacts", ["rejection_id"])

    op.create_table(
        "webhook_dead_letters",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("retried_at", nullable=True),
        _ts("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_dead_letters"),
    )
    op.create_index("ix_webhook_dead_letters_event_id", "webhook_dead_letters", ["event_id"])
    op.create_index("ix_webhook_dead_letters_resolved_at", "webhook_dead_letters", ["resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_dead_letters_resolved_at", "webhook_dead_letters")
    op.drop_index("ix_webhook_dead_letters_event_id", "webhook_dead_letters")
    op.drop_table("webhook_dead_letters")
    op.drop_index("ix_rejection_artifacts_rejection_id", "rejection_artifacts")
    op.drop_table("rejection_artifacts")
    op.drop_index("ix_rejections_person_id", "rejections")
    op.drop_index("ix_rejections_device_id", "rejections")
    op.drop_table("rejections")
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("supervision_ended_on")
        batch.drop_column("status")
