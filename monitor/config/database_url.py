"""Where the database lives: the default SQLite file and the ``--db`` / ``TRIALWATCH_DB`` rules.

Kept apart from the configuration models so that commands which need nothing but the
database (``diff``, ``history``, ``list``) can find it from ``--db`` or ``TRIALWATCH_DB``
without validating the whole ``trialwatch.toml`` (and without importing pydantic).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs


def default_database_url() -> str:
    """SQLite file ``trialwatch.db`` in the user data dir, e.g. ``sqlite:////home/u/.../x.db``."""
    return f"sqlite:///{Path(platformdirs.user_data_dir('trialwatch')) / 'trialwatch.db'}"


def normalize_database_url(value: str) -> str:
    """A URL passes; a bare file path (``--db ./x.db``) becomes an absolute SQLite URL.

    Raises ``ValueError`` for an empty value.
    """
    if not value.strip():
        raise ValueError("database URL is empty")
    if "://" in value:
        return value
    return f"sqlite:///{os.path.abspath(os.path.expanduser(value))}"


def overriding_database_url(cli_db: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(origin, value)`` of the setting that beats the file: ``--db``, then
    ``TRIALWATCH_DB``; None when neither is set (the file or the default decides)."""
    if cli_db:
        return "--db", cli_db
    from_env = env.get("TRIALWATCH_DB")
    return ("TRIALWATCH_DB", from_env) if from_env else None
