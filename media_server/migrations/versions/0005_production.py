"""Production topology: at most one automatic verdict per session and origin.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

* `verdicts.origin` (VARCHAR 32, NOT NULL, default 'analysis'): what wrote the verdict — `analysis` (the
  session's own checks) or `episode_clock` (a breath episode's result booked onto its last session).
* UNIQUE (`session_id`, `origin`) (`uq_verdicts_session_id_origin`): a redelivered Celery job or a
  recovery sweep that judges a session twice gets an IntegrityError instead of a second verdict (handled
  as "already judged"). Reviews are separate rows and are not limited.

Existing rows: a verdict whose checks came from the episode clock cannot be told apart by SQL here, so
every existing row becomes `analysis`; a session that already holds two verdicts stops the upgrade.

The upgrade refuses to run, naming the sessions, when a database already holds two verdicts for one
session: those are evidence and are never deleted by a migration; an operator decides.

Self-contained on purpose (no imports from the models). SQLite alters tables through batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    duplicated = (
        op.get_bind()
        .execute(sa.text("SELECT session_id FROM verdicts GROUP BY session_id HAVING count(*) > 1 LIMIT 20"))
        .scalars()
        .all()
    )
    if duplicated:
        raise RuntimeError(
            "sessions with more than one verdict (resolve them before upgrading): " + ", ".join(duplicated)
        )
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("origin", sa.String(32), nullable=False, server_default="analysis"))
        batch.create_unique_constraint("uq_verdicts_session_id_origin", ["session_id", "origin"])


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_constraint("uq_verdicts_session_id_origin", type_="unique")
        batch.drop_column("origin")
