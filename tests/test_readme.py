"""The README's first commands and its tour work as written, with the output it shows.

The README is read, not copied: every ``$ command`` of the console blocks in "The two
commands" and "A five-minute tour" runs in order, from the checkout, through bash, with
the installed ``trialwatch`` first on PATH and an empty home folder (so the default database
and the demo's are new). The registry is a local server (tests/registry_server.py) serving
the trials the tour names; the public internet is never asked. Output lines shown under a
command must be exactly its stdout; a command shown without output must succeed (``diff``:
exit 1, "different"). ``run`` and ``serve`` keep running: they must come up, then stop
cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from registry_server import FakeRegistry, load_fixture

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent
LONG_RUNNING = ("run", "serve")


@dataclass
class Example:
    command: str
    shown: list[str] = field(default_factory=list)


def section(text: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def examples(text: str) -> list[Example]:
    """Every ``$ command`` of the console blocks in ``text``, with the lines shown under it."""
    found: list[Example] = []
    for block in blocks(text, "console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append(Example(line[2:]))
            else:
                found[-1].shown.append(line.rstrip())
    return found


def tour() -> list[Example]:
    text = README.read_text()
    return [*examples(section(text, "The two commands")),
            *examples(section(text, "A five-minute tour"))]


def subcommand(command: str) -> str:
    """``trialwatch --db X diff ...`` -> ``diff``."""
    words = command.split("#")[0].split()
    rest = words[1:]
    while rest and rest[0].startswith("--"):
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    return rest[0] if rest else ""


@pytest.fixture
def tour_registry() -> Iterator[FakeRegistry]:
    """The trials the tour watches: the seed's trial (its API JSON form) and NCT04267848."""
    with FakeRegistry() as registry:
        registry.add(load_fixture("constructed/NCT07328581.json"))
        registry.add(load_fixture("NCT04267848.json"))
        yield registry


@pytest.fixture
def fresh_env(tmp_path: Path, tour_registry: FakeRegistry) -> dict[str, str]:
    """A new user's environment: empty HOME, nothing of trialwatch's set but the registry."""
    if not (BIN / "trialwatch").exists():
        pytest.fail(f"no trialwatch script beside {sys.executable}: install with pip -e .")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TRIALWATCH_", "XDG_"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               TRIALWATCH_CTGOV_URL=tour_registry.base_url)
    return env


def run_example(example: Example, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", example.command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def run_long(example: Example, env: dict[str, str], registry: FakeRegistry) -> int:
    """Start a command that runs until stopped; once it has asked the registry (``run``'s
    first cycle) or a few seconds have passed, it must still be up and stop on SIGTERM."""
    asked = len(registry.requests)
    process = subprocess.Popen(["bash", "-c", f"exec {example.command}"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if subcommand(example.command) != "run" or len(registry.requests) > asked:
            break
        time.sleep(0.2)
    time.sleep(2)
    assert process.poll() is None, (example.command, process.communicate())
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, (example.command, stderr)
    return process.returncode


def test_the_first_command_installs_and_runs_the_demo() -> None:
    setup = blocks(section(README.read_text(), "The two commands"), "sh")[0].strip()
    assert setup.startswith("python3 -m venv .venv && .venv/bin/pip install -e . && ")
    assert setup.endswith(" && .venv/bin/trialwatch demo")


def test_the_test_command_is_what_ci_runs() -> None:
    test_command = blocks(section(README.read_text(), "The two commands"), "sh")[1].strip()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == test_command


def test_the_demo_shows_a_status_change() -> None:
    demo = next(e for e in tour() if e.command == "trialwatch demo")
    assert "  * [high] Recruitment status: Not yet recruiting → Recruiting" in demo.shown
    assert "  * [high] Recruitment status: Recruiting → Completed" in demo.shown


def test_every_tour_command_gives_the_output_shown(fresh_env: dict[str, str],
                                                   tour_registry: FakeRegistry) -> None:
    steps = tour()
    assert len(steps) > 15 and steps[0].command == "trialwatch demo"
    for example in steps:
        if subcommand(example.command) in LONG_RUNNING:
            run_long(example, fresh_env, tour_registry)
            continue
        result = run_example(example, fresh_env)
        expected = 1 if subcommand(example.command) == "diff" else 0
        assert result.returncode == expected, (example.command, result.stdout, result.stderr)
        if example.shown:
            printed = [line.rstrip() for line in result.stdout.splitlines()]
            assert printed == example.shown, example.command
