"""One-shot read-only commands load only what they use: no Alembic, pydantic, Pygments,
Mako or structlog on ``list``, ``status``, ``history``, ``diff`` and ``export`` without a
configuration file (how fast that makes them is measured in ``bench/oneshot.py``), and
they still answer the same, and still log, when a configuration file is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
HEAVY = ("alembic", "pydantic", "pygments", "mako", "structlog")
PROBE = """\
import sys
from trialwatch.monitor.cli import main
try:
    main(sys.argv[1:])
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    sys.stderr.write("LOADED " + " ".join(sorted({{m.split(".")[0] for m in loaded}})) + "\\n")
"""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("quick")
    url = f"sqlite:///{folder / 'tw.db'}"
    ingest = subprocess.run([str(Path(sys.executable).parent / "trialwatch"), "--db", url,
                             "ingest", str(SEED)], env=env(), cwd=folder,
                            capture_output=True, text=True, timeout=60)
    assert ingest.returncode == 0, ingest.stderr
    return url


def probe(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    completed = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *args],
                               env=env(), cwd=cwd, capture_output=True, text=True, timeout=60)
    line = next(x for x in completed.stderr.splitlines() if x.startswith("LOADED"))
    return completed, line.split()[1:]


@pytest.mark.parametrize("command", [["list"], ["status"], ["history", "NCT07328581"],
                                     ["diff", "NCT07328581"], ["export", "trials"],
                                     ["list", "--json"], ["status", "--json"]])
def test_a_read_only_command_loads_none_of_the_heavy_libraries(
        db_url: str, tmp_path: Path, command: list[str]) -> None:
    completed, loaded = probe(tmp_path, "--db", db_url, *command)
    assert loaded == [], completed.stderr
    assert "NCT07328581" in completed.stdout or command[0] == "status"


def test_status_without_a_configuration_file_reads_the_database(db_url: str,
                                                                tmp_path: Path) -> None:
    completed, _loaded = probe(tmp_path, "--db", db_url, "status", "--json")
    payload = json.loads(completed.stdout)
    assert payload["schema_version"] and payload["outbox"] == {}
    assert payload["last_cycle"] is None


def test_with_a_configuration_file_status_still_logs_its_warnings(db_url: str,
                                                                  tmp_path: Path) -> None:
    config = tmp_path / "trialwatch.toml"
    config.write_text('[database]\nurl = "postgresql://tw:inline-pw@db.example.org/tw"\n')
    config.chmod(0o644)
    completed, loaded = probe(tmp_path, "--db", db_url, "status")
    assert completed.returncode == 0, completed.stderr
    assert "readable by other users" in completed.stderr and "inline-pw" not in completed.stderr
    assert "pydantic" in loaded  # the file is validated
