"""Shared pytest fixtures: the sample records, the seed, a SQLite database, a local registry,
a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from receivers import WebhookReceiver, webhook_receiver
from registry_server import FakeRegistry

from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.schema import ensure_schema

REPO_DIR = Path(__file__).resolve().parents[1]

# PostgreSQL fixtures (pg_server, pg_url, pg_module_url, backend, backend_url): tests/pg.py
pytest_plugins = ["pg"]


@pytest.fixture(scope="session")
def ctgov_dir() -> Path:
    """Real ClinicalTrials.gov API v2 documents in ``../shared/ctgov`` (its ``SOURCES.md``
    says where each came from); skipped without it, failed under CI."""
    from shared_data import shared_path

    return shared_path("ctgov")


@pytest.fixture(scope="session")
def seed_path() -> Path:
    """The rendered text page the project ships: ``seeds/NCT07328581.txt``."""
    path = REPO_DIR / "seeds" / "NCT07328581.txt"
    assert path.is_file(), f"seed missing: {path}"
    return path


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A new SQLite database file, ``tmp_path / "tw.db"``, its schema at head."""
    database = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    ensure_schema(database)
    yield database
    database.close()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    """An empty local registry (real HTTP on 127.0.0.1); tests add studies to it."""
    with FakeRegistry() as fake:
        yield fake


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """A real webhook receiver on 127.0.0.1 recording what it gets."""
    with webhook_receiver() as receiver:
        yield receiver
