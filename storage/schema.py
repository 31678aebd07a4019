"""Schema versions: apply Alembic migrations and tell whether a database is up to date.

A brand-new, empty database is migrated automatically (zero set-up); an existing database
on an older revision is refused with a message naming ``trialwatch db upgrade``.

Every command checks the schema first, so the common case (already at ``HEAD``) is one
query and does not import Alembic (~0.1 s of a one-shot command's start-up); Alembic is
loaded only to migrate or to explain a mismatch. A test keeps ``HEAD`` equal to the newest
migration script.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from trialwatch.storage.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"  # the newest revision in migrations/versions (checked by the test suite)


class SchemaOutdated(Exception):
    """The database schema is older than this trialwatch."""


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration script's revision, as Alembic reads it (``HEAD`` is its copy)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect().execution_options(read_only=True) as connection:
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
    from alembic import command

    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def is_known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for unknown / malformed revisions
        return False


def is_empty(db: Database) -> bool:
    return not inspect(db.engine).get_table_names()


def ensure_schema(db: Database, *, create_if_empty: bool = True) -> None:
    """Migrate an empty database; refuse an outdated one."""
    if _stamped_revision(db) == HEAD:
        return
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


def revision_of(connection: Connection) -> str | None:
    """The schema revision seen through ``connection``: the one row of ``alembic_version``
    by a plain query (``status``), asking Alembic only when that is not clear."""
    try:
        with connection.begin_nested():
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        rows = []
    if len(rows) == 1:
        return str(rows[0][0])
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _stamped_revision(db: Database) -> str | None:
    """The revision in ``alembic_version`` by one plain query (None: no such table, or not
    exactly one row; Alembic then looks properly).

    Both reads of the revision are read-only transactions: on SQLite they do not wait for
    another process's write lock (WAL), so a command meets a long-held lock once, at its
    first write, and gives up after one busy timeout, not after two."""
    try:
        with db.engine.connect().execution_options(read_only=True) as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None
