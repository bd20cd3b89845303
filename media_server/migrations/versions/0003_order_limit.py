"""The court order's alcohol limit per person.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

* `persons.order_brac_limit` (FLOAT, nullable) and `persons.order_brac_unit` (VARCHAR 16, nullable): the
  limit a court order sets and its unit (g/210L, mg/L, g/100mL or permille; readings are converted to
  it). Both NULL: the service default `sobriety.default_limit_g_210l` applies.

Self-contained on purpose (no imports from the models). SQLite alters tables through batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("order_brac_limit", sa.Float(), nullable=True))
        batch.add_column(sa.Column("order_brac_unit", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("order_brac_unit")
        batch.drop_column("order_brac_limit")
