"""Copy a whole trialwatch database into an empty one: ``trialwatch db migrate-to URL``.

Typically an SQLite file moving to PostgreSQL. The copy is one transaction on the target:
the schema is created by the migrations (so the target's ``alembic_version`` is the head),
every table is copied parents first, in primary-key order, in batches, PostgreSQL's id
sequences are moved past the copied ids, and the row counts of every table are compared with
the source's. Anything wrong (a non-empty target, an outdated source, a row the target
rejects, a count that differs) rolls the whole copy back: the target stays as it was.
"Empty" is no tables at all, or trialwatch's schema at head with no rows in any table.

The source is read in one read transaction (a consistent snapshot), but stop the daemon
first anyway: what it writes after the snapshot is not copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, Table, func, insert, inspect, select, text

from trialwatch.storage.engine import Database
from trialwatch.storage.models import Base
from trialwatch.storage.schema import current_revision, head_revision, is_empty, upgrade_connection

BATCH_ROWS = 500


class TransferError(Exception):
    """The copy cannot be made; the message says why (and nothing was written)."""


@dataclass
class TransferReport:
    revision: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def tables() -> list[Table]:
    """Every trialwatch table, parents before the tables that reference them."""
    return list(Base.metadata.sorted_tables)


def copy_database(source: Database, target: Database, *,
                  on_start: Callable[[dict[str, int]], None] | None = None,
                  on_rows: Callable[[str, int], None] | None = None) -> TransferReport:
    """Copy every row of ``source`` into the empty ``target``; verified, all or nothing.

    ``on_start`` gets the source's row counts before copying; ``on_rows(table, n)`` is
    called after each batch (progress bars).
    """
    if source.engine.url == target.engine.url:
        raise TransferError("the target is the source database")
    revision = current_revision(source)
    if revision != head_revision():
        raise TransferError(f"the source schema is at revision {revision or 'none'}, not "
                            f"{head_revision()}: run `trialwatch db upgrade` on it first")
    if (refusal := _not_empty(target)) is not None:
        raise TransferError(f"the target database is not empty ({refusal}; migrate-to only "
                            "fills an empty database)")
    report = TransferReport(revision=head_revision())
    with source.engine.connect() as reading, target.engine.begin() as writing:
        _snapshot(reading)
        expected = {t.name: _count(reading, t) for t in tables()}
        if on_start is not None:
            on_start(expected)
        upgrade_connection(writing)
        for table in tables():
            report.counts[table.name] = _copy_table(reading, writing, table, on_rows)
        if writing.dialect.name == "postgresql":
            _advance_sequences(writing)
        for table in tables():
            copied = _count(writing, table)
            if copied != expected[table.name] or copied != report.counts[table.name]:
                raise TransferError(f"table {table.name}: {expected[table.name]} rows in the "
                                    f"source but {copied} in the target; nothing was copied")
        reading.rollback()
    return report


def _not_empty(target: Database) -> str | None:
    """Why ``target`` cannot be filled, or None when it is empty: no tables at all, or
    trialwatch's schema at head with no rows (``db upgrade`` run first, as the README's
    PostgreSQL set-up does)."""
    if is_empty(target):
        return None
    present = set(inspect(target.engine).get_table_names())
    foreign = sorted(present - {t.name for t in tables()} - {"alembic_version"})
    if foreign:
        return f"it has tables trialwatch does not use: {', '.join(foreign[:3])}"
    revision = current_revision(target)
    if revision != head_revision():
        return f"its trialwatch schema is at revision {revision or 'none'}, not {head_revision()}"
    with target.engine.connect() as connection:
        for table in tables():
            if table.name in present and (rows := _count(connection, table)):
                return f"table {table.name} has {rows} row{'s' if rows != 1 else ''}"
    return None


def _snapshot(connection: Connection) -> None:
    """Read every table in one transaction, so the copy is one consistent point in time."""
    if connection.dialect.name == "sqlite":  # trialwatch.storage.engine begins it (BEGIN IMMEDIATE)
        connection.exec_driver_sql("SELECT 1")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


def _count(connection: Connection, table: Table) -> int:
    return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def _copy_table(reading: Connection, writing: Connection, table: Table,
                on_rows: Callable[[str, int], None] | None) -> int:
    stmt = select(table).order_by(*table.primary_key.columns)
    copied = 0
    result = reading.execution_options(yield_per=BATCH_ROWS).execute(stmt)
    for rows in result.partitions(BATCH_ROWS):
        batch: list[dict[str, Any]] = [dict(row._mapping) for row in rows]
        try:
            writing.execute(insert(table), batch)
        except Exception as exc:
            detail = " ".join(str(getattr(exc, "orig", exc)).split()) or type(exc).__name__
            raise TransferError(f"table {table.name}: the target refused a row: "
                                f"{detail[:300]}; nothing was copied") from None
        copied += len(batch)
        if on_rows is not None:
            on_rows(table.name, len(batch))
    return copied


def _advance_sequences(writing: Connection) -> None:
    """Make PostgreSQL's next generated ids follow the copied ones."""
    for table in tables():
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        column = keys[0].name
        writing.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
            f"COALESCE(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {table.name}"))
