"""PostgreSQL for tests: a throwaway database per test (or per module) on the local server.

The server is ``TRIALWATCH_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
trust auth); each database is ``CREATE DATABASE tw_<random>`` and is dropped when its test (or
module) ends, pass or fail (``DROP DATABASE ... WITH (FORCE)``, so connections a test left
open, or a killed worker's, do not keep it alive). When the server does not answer, the
tests that need it are skipped with the reason, unless ``CI`` is set: then they fail.

Registered from ``tests/conftest.py`` (``pytest_plugins``); fixtures:
``pg_server`` (session), ``pg_url`` (a fresh database per test),
``pg_module_url`` (one per module), and ``backend_url(backend)`` for parametrized tests.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 3


class PgServer:
    """The local server, reached through its maintenance database."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.created: set[str] = set()

    def conninfo(self, database: str | None = None) -> str:
        url = self.url.set(drivername="postgresql", database=database or self.url.database)
        return url.render_as_string(hide_password=False)

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL trialwatch is given (``--db``) for one test database."""
        url = self.url.set(drivername="postgresql+psycopg", database=database)
        return url.render_as_string(hide_password=False)

    def create(self) -> str:
        name = f"tw_{secrets.token_hex(6)}"
        with psycopg.connect(self.conninfo(), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.add(name)
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                               .format(sql.Identifier(name)))
        self.created.discard(name)


def _unreachable(reason: str) -> None:
    message = f"PostgreSQL not reachable ({reason}); start it (see .ci/run) or set " \
              "TRIALWATCH_TEST_PG"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer(os.environ.get("TRIALWATCH_TEST_PG", DEFAULT_SERVER))
    try:
        with psycopg.connect(server.conninfo(), connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        _unreachable(" ".join(str(exc).split()) or type(exc).__name__)
    yield server
    for name in list(server.created):  # anything a test could not drop itself
        server.drop(name)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = pg_server.create()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop(name)


@pytest.fixture(scope="module")
def pg_module_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database shared by one test module."""
    name = pg_server.create()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop(name)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: parametrizes a test over both storage backends."""
    return str(request.param)


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the test's ``backend``: a file in ``tmp_path``, or a fresh
    PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'tw.db'}"
    return str(request.getfixturevalue("pg_url"))
