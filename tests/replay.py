"""The 36 real daily captures of ``../shared/ctgov/replay`` replayed two ways, for tests and bench.

``ctgov-36-days.tar.xz`` holds ``days.json`` (per day: the capture's date and, per trial, the
file its capture is in) and ``caps/`` (6,008 distinct API v2 documents). Two paths see the
same captures:

* live: the local registry stand-in (``registry_server.FakeRegistry``) serves, day after day,
  each trial's latest capture (a trial missing from one day's capture is served as last
  captured: a capture that skipped it says nothing of the registry), with the day's date as
  the ``dataTimestamp`` of ``/version`` (one data load per day); ``trialwatch check --json``
  runs once per day over the trials captured so far;
* files: ``trialwatch ingest --json`` of that day's capture files, file by file.

``replay(...)`` returns, per day, what each path reported. Outside pytest (benchmarks) put
``tests/`` on ``sys.path`` and import it the same way.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from registry_server import FakeRegistry

from trialwatch.monitor.cli import cli

ARCHIVE = (Path(__file__).resolve().parents[1].parent / "shared" / "ctgov" / "replay"
           / "ctgov-36-days.tar.xz")


@dataclass(frozen=True)
class Day:
    """One capture day: the registry's data load and each captured trial's file."""

    index: int
    data_timestamp: str  # the capture's moment in UTC, as /version writes it
    trials: Mapping[str, str]  # NCT id -> capture path inside the archive

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.data_timestamp)


def load_days(archive: Path = ARCHIVE) -> list[Day]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("days.json")
        assert member is not None
        raw = json.load(member)
    return [Day(i, _utc(entry["date"]), dict(entry["trials"])) for i, entry in enumerate(raw)]


def extract(days: Sequence[Day], dest: Path, archive: Path = ARCHIVE) -> None:
    """Extract the capture files the days name into ``dest`` (nothing else)."""
    wanted = {path for day in days for path in day.trials.values()}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name in wanted and not (dest / member.name).exists():
                tar.extract(member, dest, filter="data")


def restrict(days: Sequence[Day], trials: set[str] | None = None, *,
             first: int = 0, last: int | None = None) -> list[Day]:
    """Days ``first``..``last`` (inclusive) of the replay, only the given trials."""
    chosen = days[first:None if last is None else last + 1]
    return [Day(d.index, d.data_timestamp,
                {n: p for n, p in d.trials.items() if trials is None or n in trials})
            for d in chosen]


class CaptureStudies(Mapping[str, dict[str, Any]]):
    """What the stand-in serves: each trial's latest capture, read from its file when asked
    (1,150 parsed documents are not kept in memory)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: dict[str, str] = {}

    def __getitem__(self, nct_id: str) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads((self.folder / self.paths[nct_id]).read_bytes())
        return document

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class DayResult:
    """What one day gave on each path."""

    day: Day
    check_events: list[dict[str, Any]] = field(default_factory=list)
    ingest_events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0


def replay(days: Sequence[Day], folder: Path, work: Path, *, settle_days: int = 0,
           reverify_every: str = "7d", ingest: bool = True) -> list[DayResult]:
    """Replay the days through ``check`` (and ``ingest``), then ``settle_days`` more daily
    data loads that change none of the trials (the registry keeps loading data every day),
    so that re-verification has its period to find what changed silently at the end."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "trialwatch.toml"
    config.write_text(f'[ctgov]\nrequests_per_second = 0.0\nreverify_every = "{reverify_every}"\n'
                      "max_retries = 0\n")
    live_db, files_db = f"sqlite:///{work / 'live.db'}", f"sqlite:///{work / 'files.db'}"
    studies = CaptureStudies(folder)
    results = []
    settle = [Day(-1, (days[-1].moment + timedelta(days=k)).isoformat(timespec="seconds"), {})
              for k in range(1, settle_days + 1)]
    with FakeRegistry() as registry:
        registry.studies = studies  # type: ignore[assignment]
        runner = CliRunner()
        env = {"TRIALWATCH_CTGOV_URL": registry.base_url, "TRIALWATCH_CONFIG_FILE": None}
        for day in [*days, *settle]:
            result = DayResult(day)
            new = sorted(n for n in day.trials if n not in studies.paths)
            studies.paths.update(day.trials)
            registry.data_timestamp = day.data_timestamp
            if new:
                _cli(runner, env, config, live_db, "watch", *new)
            report = _cli(runner, env, config, live_db, "check", "--json", "--no-notify")
            result.check_events, result.requests = report["events"], report["requests"]
            if ingest and day.trials:
                paths = [str(folder / day.trials[n]) for n in sorted(day.trials)]
                result.ingest_events = _cli(runner, env, config, files_db, "ingest", "--json",
                                            "--no-notify", *paths)["events"]
            results.append(result)
    return results


def _cli(runner: CliRunner, env: dict[str, str | None], config: Path, db: str,
         *args: str) -> Any:
    result = runner.invoke(cli, ["--config", str(config), "--db", db, *args], env=env)
    assert result.exit_code == 0, f"{args[0]}: {result.output}{result.stderr}"
    return orjson.loads(result.stdout) if "--json" in args else None


def _utc(moment: str) -> str:
    parsed = datetime.fromisoformat(moment).astimezone(UTC).replace(tzinfo=None)
    return parsed.isoformat(timespec="seconds")
