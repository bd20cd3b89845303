"""Location monitoring: signed batches, hash-chained positions, zones, device events and alerts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

* `signed_batches`: a position or event batch exactly as a tracker gateway signed it (body + signature).
* `positions`: one fix per row, hash-chained per person in arrival order (`seq`, `prev_hash`, `row_hash`);
  (person_id, seq) and (person_id, prev_hash) are unique so a person's chain cannot fork.
* `location_zones`: inclusion / exclusion zones (circle or polygon, optional daily hours), soft-deleted.
* `device_events`: strap opened, power lost, ... as reported.
* `location_alerts`: violations and technical alerts from zone rules (with proving positions) or events.

New devices of kind "tracker" need no schema change (kinds are stored as values). Self-contained on
purpose (no imports from the models).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = 36
SHA = 64
ENUM = 32


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def upgrade() -> None:
    op.create_table(
        "location_zones",
        sa.Column("id", sa.String(UUID), nullable=False),
        sa.Column("person_id", sa.String(UUID), nullable=False),
        sa.Column("kind", sa.String(ENUM), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("geometry", sa.JSON(), nullable=False),
        sa.Column("hours", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(UUID), nullable=True),
        _ts("created_at"),
        _ts("deleted_at", nullable=True),
        _fk("location_zones", "created_by", "users"),
        _fk("location_zones", "person_id", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_location_zones"),
    )
    _indexes("location_zones", "created_by", "person_id")
    op.create_table(
        "signed_batches",
        sa.Column("id", sa.String(UUID), nullable=False),
        sa.Column("device_id", sa.String(UUID), nullable=False),
        sa.Column("person_id", sa.String(UUID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        _ts("received_at"),
        _fk("signed_batches", "device_id", "devices"),
        _fk("signed_batches", "person_id", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_signed_batches"),
    )
    _indexes("signed_batches", "device_id", "person_id")
    op.create_table(
        "device_events",
        sa.Column("id", sa.String(UUID), nullable=False),
        sa.Column("device_id", sa.String(UUID), nullable=False),
        sa.Column("person_id", sa.String(UUID), nullable=False),
        sa.Column("batch_id", sa.String(UUID), nullable=False),
        sa.Column("type", sa.String(ENUM), nullable=False),
        _ts("t"),
        sa.Column("details", sa.JSON(), nullable=False),
        _ts("received_at"),
        _fk("device_events", "batch_id", "signed_batches"),
        _fk("device_events", "device_id", "devices"),
        _fk("device_events", "person_id", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_device_events"),
    )
    _indexes("device_events", "batch_id", "device_id", "person_id")
    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_id", sa.String(UUID), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _ts("t"),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=False),
        sa.Column("source", sa.String(ENUM), nullable=False),
        sa.Column("device_id", sa.String(UUID), nullable=True),
        sa.Column("batch_id", sa.String(UUID), nullable=True),
        sa.Column("batch_sha256", sa.String(SHA), nullable=True),
        _ts("received_at"),
        sa.Column("prev_hash", sa.String(SHA), nullable=False),
        sa.Column("row_hash", sa.String(SHA), nullable=False),
        sa.CheckConstraint("accuracy_m > 0", name="ck_positions_accuracy_positive"),
        _fk("positions", "batch_id", "signed_batches"),
        _fk("positions", "device_id", "devices"),
        _fk("positions", "person_id", "persons"),
        sa.PrimaryKeyConstraint("id", name="pk_positions"),
        sa.UniqueConstraint("person_id", "prev_hash", name="uq_positions_person_prev_hash"),
        sa.UniqueConstraint("person_id", "seq", name="uq_positions_person_seq"),
        sqlite_autoincrement=True,
    )
    _indexes("positions", "batch_id", "device_id")
    op.create_index("ix_positions_person_t", "positions", ["person_id", "t"], unique=False)
    op.create_table(
        "location_alerts",
        sa.Column("id", sa.String(UUID), nullable=False),
        sa.Column("person_id", sa.String(UUID), nullable=False),
        sa.Column("kind", sa.String(ENUM), nullable=False),
        sa.Column("source", sa.String(ENUM), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("zone_id", sa.String(UUID), nullable=True),
        sa.Column("device_event_id", sa.String(UUID), nullable=True),
        _ts("started_at"),
        _ts("ended_at"),
        sa.Column("position_ids", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("location_alerts", "device_event_id", "device_events"),
        _fk("location_alerts", "person_id", "persons"),
        _fk("location_alerts", "zone_id", "location_zones"),
        sa.PrimaryKeyConstraint("id", name="pk_location_alerts"),
    )
    _indexes("location_alerts", "device_event_id", "kind", "person_id", "zone_id")
    op.create_index(
        "ix_location_alerts_person_started", "location_alerts", ["person_id", "started_at"], unique=False
    )


def downgrade() -> None:
    op.drop_table("location_alerts")
    op.drop_table("positions")
    op.drop_table("device_events")
    op.drop_table("signed_batches")
    op.drop_table("location_zones")
