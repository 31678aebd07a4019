"""Is a ``trialwatch run`` alive on this PostgreSQL database? Each daemon says so by holding
a shared session advisory lock for as long as it runs.

On SQLite the lock file beside the database answers that (``service.lock``); PostgreSQL
workers keep no file, and the last cycle's row cannot tell a daemon from a one-off
``check``. A session advisory lock lives exactly as long as the daemon's connection: a
process killed with ``kill -9`` drops it, so ``status`` never reports a cycle that nothing
will run.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from trialwatch.storage.engine import Database

# A bigint key ("trialx"); pg_locks shows it as classid (high 32 bits) and objid (low 32).
DAEMON_PRESENCE_KEY = 0x7472_6961_6C78


class DaemonPresence:
    """The presence lock, held on a connection of its own until ``release``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def release(self) -> None:
        """Let go: the connection is discarded, not returned to the pool with the lock."""
        self._connection.invalidate()
        self._connection.close()


def announce_daemon(db: Database) -> DaemonPresence | None:
    """Hold the presence lock for as long as this daemon runs; None on a database other
    than PostgreSQL."""
    if db.engine.dialect.name != "postgresql":
        return None
    connection = db.engine.connect()
    try:
        connection.execute(text("SELECT pg_advisory_lock_shared(:key)"),
                           {"key": DAEMON_PRESENCE_KEY})
        connection.commit()
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    return DaemonPresence(connection)


def daemon_present(db: Database) -> bool:
    """True when some ``trialwatch run`` holds the presence lock on this database."""
    if db.engine.dialect.name != "postgresql":
        return False
    with db.engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1)"),
            {"high": DAEMON_PRESENCE_KEY >> 32, "low": DAEMON_PRESENCE_KEY & 0xFFFF_FFFF},
        ).scalar())
