"""One ``trialwatch run`` per SQLite database: an OS file lock beside the database file.

The daemon holds ``flock(LOCK_EX)`` on ``<database file>.lock`` for its whole life. The
kernel drops that lock when the process dies, however it dies (``kill -9`` included), so a
lock file left behind is never stale: the next ``run`` simply locks it again. Whether a
daemon is alive is decided by the lock alone, never by the pid written in the file (pids
are reused).

The file's contents are informational JSON that the daemon keeps current and that
``trialwatch status`` reads::

    {"pid": 4242, "started_at": "2026-11-25T12:00:00Z", "next_cycle": "2026-11-25T18:00:00Z",
     "database": "/var/lib/trialwatch/trialwatch.db"}

The file is never deleted (deleting a lock file lets two processes lock two different
inodes under one name); a clean exit empties it. ``read_lock_state`` probes with a shared,
non-blocking lock, so ``acquire`` retries for a moment before reporting a running daemon.
PostgreSQL needs no lock here: several workers share one database by leasing trials.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from trialwatch.monitor.events import iso_utc, parse_iso_utc

__all__ = ["AlreadyRunning", "LockState", "ServiceLock", "lock_path_for", "read_lock_state"]

LOCK_SUFFIX = ".lock"
RECORD_WIDTH = 512  # contents are padded to this width, so a rewrite never shrinks the file
ACQUIRE_PATIENCE = 0.5  # seconds to retry while a `status` probe holds a shared lock


class AlreadyRunning(Exception):
    """Another process holds the lock; ``pid`` is what it wrote (None when unreadable)."""

    def __init__(self, database: str, pid: int | None) -> None:
        self.database = database
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"another trialwatch run is already running on {database} ({who})")


@dataclass(frozen=True)
class LockState:
    """What a running daemon wrote into its lock file."""

    pid: int | None
    started_at: datetime | None
    next_cycle: datetime | None
    database: str | None


def lock_path_for(url: str) -> Path | None:
    """``<file>.lock`` for a SQLite file URL; None for other databases and in-memory SQLite."""
    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        path = Path(database).expanduser().resolve()
    except (RuntimeError, OSError):  # a symlink loop: opening the database will say so
        path = Path(os.path.abspath(Path(database).expanduser()))
    return path.with_name(path.name + LOCK_SUFFIX)


class ServiceLock:
    """The held lock: ``update`` rewrites the informational record, ``release`` lets go."""

    def __init__(self, path: Path, fd: int, database: str, started_at: datetime) -> None:
        self.path = path
        self.database = database
        self.started_at = started_at
        self._fd: int | None = fd
        self._next_cycle: datetime | None = None
        self._mutex = threading.Lock()  # jobs update, the main thread releases

    @classmethod
    def acquire(cls, path: Path, database: str, *, patience: float = ACQUIRE_PATIENCE
                ) -> ServiceLock:
        """Lock ``path`` (created if needed) or raise ``AlreadyRunning``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _parse(_read(fd)).pid
                    os.close(fd)
                    raise AlreadyRunning(database, pid) from None
                time.sleep(0.05)
            except BaseException:
                os.close(fd)
                raise
        lock = cls(path, fd, database, datetime.now(UTC))
        os.ftruncate(fd, 0)
        lock._write()
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def update(self, *, next_cycle: datetime | None) -> None:
        """Record when the next cycle is due (for ``status``)."""
        with self._mutex:
            if next_cycle != self._next_cycle:
                self._next_cycle = next_cycle
                self._write()

    def release(self) -> None:
        """Empty the file and unlock it (the file stays; see the module docstring)."""
        with self._mutex:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> ServiceLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _write(self) -> None:
        if self._fd is None:
            return
        record = {"pid": os.getpid(), "started_at": _iso(self.started_at),
                  "next_cycle": _iso(self._next_cycle), "database": self.database}
        text = json.dumps(record)
        # One positioned write of a fixed-width record: readers see the old or the new one.
        os.pwrite(self._fd, (text.ljust(RECORD_WIDTH - 1) + "\n").encode(), 0)


def read_lock_state(path: Path) -> LockState | None:
    """The running daemon's record, or None when no daemon holds the lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held exclusively: a daemon is running
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        state = _parse(_read(fd))
        for _ in range(3):  # a record caught mid-write (at start-up) is read again
            if state.pid is not None:
                break
            time.sleep(0.02)
            state = _parse(_read(fd))
        return state
    finally:
        os.close(fd)


def _read(fd: int) -> bytes:
    return os.pread(fd, 4 * RECORD_WIDTH, 0)


def _parse(raw: bytes) -> LockState:
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return LockState(None, None, None, None)
    pid = data.get("pid")
    database = data.get("database")
    return LockState(pid=pid if isinstance(pid, int) else None,
                     started_at=parse_iso_utc(data.get("started_at")),
                     next_cycle=parse_iso_utc(data.get("next_cycle")),
                     database=database if isinstance(database, str) else None)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return iso_utc(value)
