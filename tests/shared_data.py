"""The real registry data in ``../shared`` (beside the checkout), for tests that read it.

It stays outside the repository (it comes from other public repositories). A test that
needs it asks ``shared_path``: without the folder the test is skipped with the reason, and
fails instead when the environment variable ``CI`` is set (CI always has the data).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CTGOV = SHARED / "ctgov"
# The project's own constructed documents (no ../shared needed): tests/fixtures/ctgov/constructed
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed"
REAL = ("ctgov", "real")
CORPUS = (*REAL, "corpus", "ctwatch-latest-1181.tar.gz")


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>``; skip (or, under CI, fail) the test when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"real registry data not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        # allowed at module level too: a module whose template document is real skips whole
        pytest.skip(reason, allow_module_level=True)
    return path


def ctgov_file(name: str) -> Path:
    """A document of ``../shared/ctgov`` by name (``"NCT04267848.json"``); a
    ``"constructed/..."`` name is the project's own copy, always there."""
    if name.startswith("constructed/"):
        return CONSTRUCTED / name.removeprefix("constructed/")
    return shared_path("ctgov", name)


def real_documents() -> Iterator[tuple[str, Any]]:
    """Every real API v2 study in ``ctgov/real`` as ``(where, document)``: the single
    studies, the version pairs, the studies of the list pages and the corpus tarball."""
    from trialwatch.monitor.sources.ctgov.parser import iter_page_studies

    real = shared_path(*REAL)
    for folder in ("studies", "pairs"):
        for path in sorted((real / folder).glob("*.json")):
            yield f"{folder}/{path.name}", orjson.loads(path.read_bytes())
    for path in sorted((real / "pages").glob("*.json")):
        for n, study in enumerate(iter_page_studies(orjson.loads(path.read_bytes()))):
            yield f"pages/{path.name}[{n}]", study
    with tarfile.open(shared_path(*CORPUS)) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None and member.name.endswith(".json"):
                yield f"corpus/{member.name}", orjson.loads(handle.read())


def real_study(name: str) -> Any:
    """One document of ``ctgov/real/studies`` or ``pairs`` by its file name's start."""
    real = shared_path(*REAL)
    for folder in ("studies", "pairs"):
        found = sorted((real / folder).glob(f"{name}*.json"))
        if found:
            return orjson.loads(found[0].read_bytes())
    pytest.fail(f"no real document named {name}* in {real}")
