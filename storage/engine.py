"""Engine and session set-up: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL.

``open_database(url)`` is the one entry point: it creates the SQLite file's folder,
configures the connection and returns a ``Database`` holding the engine and a session
factory. One ``Session`` per unit of work: ``with db.transaction() as session: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from trialwatch.monitor.redaction import mask_database_message, mask_url_passwords

SQLITE_BUSY_TIMEOUT_MS = 15_000


class DatabaseError(Exception):
    """The database cannot be opened or used; the message says which and why."""


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` as ``postgresql+psycopg://`` (psycopg 3 is what we ship)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any exception."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(mask_database_message(
            f"invalid database URL {mask_url_passwords(url)!r}: {exc}", url)) from None
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create folder for {path}: {exc.strerror}") from None
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # unknown dialect, missing driver
        raise DatabaseError(mask_database_message(
            f"cannot use database URL {mask_url_passwords(url)!r}: {exc}", url)) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    return Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # Transactions are begun by _begin_immediate, not by the driver's implicit BEGIN (which
    # comes only before the first write, after the reads it depends on).
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Any) -> None:
    """Every unit of work takes SQLite's write lock when it starts (waiting up to the busy
    timeout), so what it reads cannot change before it writes. Without it two processes
    (``run`` and ``check``, two ``ingest``s) read the same latest version, both wrote the
    next one and one died on a UNIQUE constraint; both could also claim the same alert.

    A connection opened with the execution option ``read_only=True`` (``export``: a long
    read) begins a plain read transaction instead: a consistent snapshot that, under WAL,
    never holds up the daemon's writes."""
    if connection.get_execution_options().get("read_only"):
        connection.exec_driver_sql("BEGIN")
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE")
