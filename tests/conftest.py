"""Shared pytest fixtures: where the shared sample records and the repo's seed live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]

# PostgreSQL fixtures (pg_server, pg_url, pg_module_url, backend, backend_url): tests/pg.py
pytest_plugins = ["pg"]


@pytest.fixture(scope="session")
def ctgov_dir() -> Path:
    """Real ClinicalTrials.gov API v2 documents, vendored from ``../shared/ctgov``.

    They live in the repository so a clean clone (CI) tests without the shared folder;
    ``tests/fixtures/ctgov/SOURCES.md`` says where each file came from.
    """
    path = REPO_DIR / "tests" / "fixtures" / "ctgov"
    assert path.is_dir(), f"ctgov samples missing: {path}"
    return path


@pytest.fixture(scope="session")
def seed_path() -> Path:
    """The rendered text page the project ships: ``seeds/NCT07328581.txt``."""
    path = REPO_DIR / "seeds" / "NCT07328581.txt"
    assert path.is_file(), f"seed missing: {path}"
    return path
