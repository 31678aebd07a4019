"""Where the database lives: the default SQLite file and the ``--db`` / ``TRIALWATCH_DB`` rules.

Kept apart from the configuration models so that commands which need nothing but the
database (``diff``, ``history``, ``list``) can find it from ``--db`` or ``TRIALWATCH_DB``
without validating the whole ``trialwatch.toml`` (and without importing pydantic).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG_FILE = "trialwatch.toml"


def config_file_in_use(config_path: Path | None) -> Path | None:
    """The configuration file a command reads: ``--config PATH``, else ``./trialwatch.toml``
    when it exists, else None (every default; nothing to validate, pydantic not needed)."""
    if config_path is not None:
        return config_path
    candidate = Path(DEFAULT_CONFIG_FILE)
    return candidate if candidate.is_file() else None


def default_database_url() -> str:
    """SQLite file ``trialwatch.db`` in the user data dir, e.g. ``sqlite:////home/u/.../x.db``."""
    import platformdirs  # only when no --db / TRIALWATCH_DB / file names the database

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


def beside_config_file(value: str, config_dir: Path) -> str:
    """A relative SQLite path written in a configuration file, made absolute against the
    file's folder: ``sqlite:///trialwatch.db`` in ``/etc/tw/trialwatch.toml`` is
    ``/etc/tw/trialwatch.db``, whatever folder the command runs from (pure).

    Absolute paths, in-memory databases and other backends are returned unchanged.
    """
    if "://" not in value:
        path = Path(value).expanduser()
        return value if not value.strip() or path.is_absolute() else str(config_dir / path)
    scheme, _, rest = value.partition("://")
    if scheme.split("+")[0] != "sqlite" or not rest.startswith("/"):
        return value
    database, query = rest[1:], ""
    if "?" in database:
        database, _, query = database.partition("?")
        query = "?" + query
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return value
    return f"{scheme}:///{config_dir / database}{query}"


def overriding_database_url(cli_db: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(origin, value)`` of the setting that beats the file: ``--db``, then
    ``TRIALWATCH_DB``; None when neither is set (the file or the default decides)."""
    if cli_db:
        return "--db", cli_db
    from_env = env.get("TRIALWATCH_DB")
    return ("TRIALWATCH_DB", from_env) if from_env else None
