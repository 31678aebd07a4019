"""The code stays ruff-clean and mypy-clean (as installed: ``trialwatch.monitor`` and so on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_installed_package(tmp_path: Path) -> None:
    # mypy cannot follow setuptools' package-dir mapping (monitor/ -> trialwatch.monitor), so
    # it reads the same files through a trialwatch/ folder of symbolic links.
    package = tmp_path / "trialwatch"
    package.mkdir()
    for folder in ("monitor", "storage", "notifiers"):
        (package / folder).symlink_to(REPO / folder, target_is_directory=True)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "trialwatch"],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found" in result.stdout
