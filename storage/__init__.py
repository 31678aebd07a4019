"""Persistence: SQLAlchemy models, engine set-up, repository and Alembic migrations."""
