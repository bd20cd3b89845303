"""Breath tests: device calibration date, full pHash sets, and the retest episodes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

* `devices.calibrated_on` (DATE, nullable): the calibration date an admin records for a breathalyzer;
  `sobriety.reading.validate_reading` judges the older of it and the station's own date.
* `photo_fingerprints.phash` widens from 64 to 112 characters: `sobriety.photos.phash_hex` stores a
  photo's whole-image hash and its six crop hashes (7 x 16 hex digits). Existing 16-digit rows stay valid
  (a one-hash set).
* `breath_episodes`: one scheduled/unscheduled breath test and its retests (`sobriety.policy.Episode`);
  `episode` is the Episode as JSON, `history` the transitions and actions taken.

Self-contained on purpose (no imports from the models). SQLite alters columns through batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PHASH_OLD_LEN = 64
PHASH_NEW_LEN = 112


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("calibrated_on", sa.Date(), nullable=True))
    with op.batch_alter_table("photo_fingerprints") as batch:
        batch.alter_column(
            "phash",
            existing_type=sa.String(PHASH_OLD_LEN),
            type_=sa.String(PHASH_NEW_LEN),
            existing_nullable=False,
        )
    op.create_table(
        "breath_episodes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("episode", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("first_session_id", sa.String(36), nullable=True),
        sa.Column("last_session_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["persons.id"], name="fk_breath_episodes_person_id_persons"),
        sa.ForeignKeyConstraint(
            ["first_session_id"], ["sessions.id"], name="fk_breath_episodes_first_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["last_session_id"], ["sessions.id"], name="fk_breath_episodes_last_session_id_sessions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_breath_episodes"),
    )
    op.create_index("ix_breath_episodes_person_id", "breath_episodes", ["person_id"])
    op.create_index("ix_breath_episodes_state", "breath_episodes", ["state"])
    op.create_index("ix_breath_episodes_first_session_id", "breath_episodes", ["first_session_id"])
    op.create_index("ix_breath_episodes_last_session_id", "breath_episodes", ["last_session_id"])


def downgrade() -> None:
    op.drop_table("breath_episodes")
    # Keep the whole-image hash (the first 16 hex digits) of sets that no longer fit.
    op.execute(
        f"UPDATE photo_fingerprints SET phash = substr(phash, 1, 16) WHERE length(phash) > {PHASH_OLD_LEN}"
    )
    with op.batch_alter_table("photo_fingerprints") as batch:
        batch.alter_column(
            "phash",
            existing_type=sa.String(PHASH_NEW_LEN),
            type_=sa.String(PHASH_OLD_LEN),
            existing_nullable=False,
        )
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("calibrated_on")
