"""Schema versions: apply Alembic migrations and tell whether a database is up to date.

A brand-new, empty database is migrated automatically (zero set-up); an existing database
on an older revision is refused with a message naming ``trialwatch db upgrade``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from storage.engine import Database

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaOutdated(Exception):
    """The database schema is older than this trialwatch."""


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str]:
    """Apply every pending migration; returns (revision before, revision after)."""
    before = current_revision(db)
    with db.engine.begin() as connection:
        upgrade_connection(connection)
    return before, head_revision()


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Apply migrations inside the caller's transaction (``db migrate-to`` copies the data
    in the same one, so a failure leaves the target as empty as it was)."""
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def is_known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for unknown / malformed revisions
        return False


def is_empty(db: Database) -> bool:
    return not inspect(db.engine).get_table_names()


def ensure_schema(db: Database, *, create_if_empty: bool = True) -> None:
    """Migrate an empty database; refuse an outdated one."""
    current = current_revision(db)
    if current == head_revision():
        return
    if current is None and create_if_empty and is_empty(db):
        upgrade(db)
        return
    if current is None:  # not empty after all: another process may have just migrated it
        current = current_revision(db)
        if current == head_revision():
            return
    if current is not None and not is_known_revision(current):
        raise SchemaOutdated(
            f"database schema is at revision {current}, which this trialwatch does not know "
            "(written by a newer trialwatch?): upgrade trialwatch"
        )
    raise SchemaOutdated(
        f"database schema is at revision {current or 'none'}, this trialwatch needs "
        f"{head_revision()}: run `trialwatch db upgrade`"
    )
