"""Database layer: SQLAlchemy models, engines, Alembic migrations and the audit log."""
