"""Crash consistency: ``kill -9`` a real ``trialwatch`` process at random moments.

Two scenarios, each repeated (3 times in the default run, 20 times marked slow):

* during an ingest of a folder of 1,000 generated record files (500 trials, two versions
  each, so 500 status changes and 500 alerts are written);
* during outbox delivery of those alerts to a slow webhook receiver.

After every kill the database must be whole: ``PRAGMA integrity_check`` is ok, versions are
numbered 1..n without gaps and never repeat their predecessor, every event points at stored
versions of its own trial (``from_version`` is null only for ``new_trial``), every outbox row
at events of its trial's version. Then the work is finished by running it again, and every
alert reaches the receiver at least once, always under the same id with the same body.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from receivers import WebhookReceiver
from registry_server import make_study, nct

from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage.engine import open_database

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = orjson.loads((REPO / "tests" / "fixtures" / "ctgov" / "constructed"
                         / "NCT07328581.json").read_bytes())
TRIALS = 500  # two versions each: 1,000 record files


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("records")
    for i in range(1, TRIALS + 1):
        first = make_study(TEMPLATE, nct(i), "2026-01-09", overall_status="NOT_YET_RECRUITING")
        second = make_study(TEMPLATE, nct(i), "2026-02-01", overall_status="RECRUITING")
        (folder / f"{nct(i)}-1.json").write_bytes(orjson.dumps(first))
        (folder / f"{nct(i)}-2.json").write_bytes(orjson.dumps(second))
    return folder


def write_config(tmp_path: Path, hook: WebhookReceiver) -> Path:
    config = tmp_path / "trialwatch.toml"
    config.write_text(textwrap.dedent(f"""
        [database]
        url = "sqlite:///{tmp_path / 'tw.db'}"

        [channels.ops-hook]
        type = "webhook"
        url = "{hook.url}"
        """))
    return config


def trialwatch(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "trialwatch.monitor.cli", "--config",
                             str(config), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TRIALWATCH_LOG_LEVEL": "error"})


def kill_when(process: subprocess.Popen[bytes], reached: Callable[[], bool],
              rng: random.Random) -> bool:
    """SIGKILL once ``reached()`` (some random amount of progress), a few random milliseconds
    later so the kill lands anywhere, mid-transaction included; False when the process
    finished first (it must then have succeeded)."""
    while not reached():
        if process.poll() is not None:
            assert process.stderr is not None
            stderr = process.stderr.read().decode()
            process.stderr.close()
            assert process.returncode == 0, stderr
            return False
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.03))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.stderr is not None
    process.stderr.close()
    return True


def count_rows(db_path: Path, table: str) -> int:
    if not db_path.exists():
        return 0
    connection = sqlite3.connect(db_path, timeout=30)
    try:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        connection.close()


def assert_consistent(db_path: Path) -> dict[str, int]:
    """The database invariants a crash must never break; returns a few counts."""
    connection = sqlite3.connect(db_path, timeout=30)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        versions: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for trial_id, number, content_hash in connection.execute(
                "SELECT trial_id, version, content_hash FROM versions ORDER BY trial_id, version"):
            versions[trial_id].append((number, content_hash))
        for trial_id, latest in connection.execute("SELECT id, latest_version FROM trials"):
            numbers = [n for n, _ in versions[trial_id]]
            assert numbers == list(range(1, latest + 1)), (trial_id, numbers, latest)
            hashes = [h for _, h in versions[trial_id]]
            assert all(a != b for a, b in itertools.pairwise(hashes)), trial_id
        events: dict[int, tuple[int, int]] = {}
        for event_id, trial_id, kind, from_v, to_v in connection.execute(
                "SELECT id, trial_id, kind, from_version, to_version FROM events"):
            stored = {n for n, _ in versions[trial_id]}
            assert to_v in stored, (event_id, to_v)
            assert from_v in stored or (from_v is None and kind == "new_trial"), (event_id, kind)
            events[event_id] = (trial_id, to_v)
        alerts = 0
        for alert_id, trial_id, version, event_ids in connection.execute(
                "SELECT id, trial_id, version, event_ids FROM outbox"):
            alerts += 1
            ids = orjson.loads(event_ids)
            assert ids, alert_id
            assert all(events.get(e) == (trial_id, version) for e in ids), alert_id
        return {"versions": sum(len(v) for v in versions.values()), "events": len(events),
                "alerts": alerts}
    finally:
        connection.close()


def crash_ingest_repeatedly(tmp_path: Path, records: Path, hook: WebhookReceiver,
                            times: int, seed: int) -> Path:
    config = write_config(tmp_path, hook)
    rng = random.Random(seed)
    db_path = tmp_path / "tw.db"
    kills = 0
    for _ in range(times):
        stored = count_rows(db_path, "versions")
        if stored >= 2 * TRIALS:
            break  # nothing left to interrupt
        target = rng.randint(stored + 1, 2 * TRIALS)
        process = trialwatch(config, "ingest", "--no-notify", str(records))
        if not kill_when(process, lambda t=target: count_rows(db_path, "versions") >= t, rng):
            break
        kills += 1
        assert_consistent(db_path)
    assert kills
    finished = trialwatch(config, "ingest", "--no-notify", str(records))
    _, stderr = finished.communicate(timeout=600)
    assert finished.returncode == 0, stderr.decode()
    counts = assert_consistent(db_path)
    # each trial exactly once per version: the restarts never replayed v1 after v2
    assert counts == {"versions": 2 * TRIALS, "events": TRIALS, "alerts": TRIALS}
    return config


def crash_delivery_repeatedly(tmp_path: Path, config: Path, records: Path,
                              hook: WebhookReceiver, times: int, seed: int) -> None:
    rng = random.Random(seed)
    db_path = tmp_path / "tw.db"
    hook.delay = 0.01  # slow receiver: delivery of every alert takes several seconds
    one_file = str(next(records.iterdir()))  # nothing new: the command only delivers
    kills = 0
    for _ in range(times):
        if len(hook.requests) >= TRIALS:
            break
        target = rng.randint(len(hook.requests) + 1, TRIALS)
        process = trialwatch(config, "ingest", one_file)
        if not kill_when(process, lambda t=target: len(hook.requests) >= t, rng):
            break
        kills += 1
        assert_consistent(db_path)
    assert kills and hook.requests  # killed while alerts were going out
    hook.delay = 0.0
    # the leases of alerts claimed by a killed process expire; then everything goes out
    db = open_database(f"sqlite:///{db_path}")
    try:
        channels = {"ops-hook": build_channel("ops-hook", {"type": "webhook", "url": hook.url},
                                              {})}
        later = datetime.now(UTC) + timedelta(hours=1)
        while deliver_due(db, channels, DeliveryPolicy(), now=later).delivered:
            pass
    finally:
        db.close()
    assert_consistent(db_path)
    connection = sqlite3.connect(db_path)
    try:
        rows = connection.execute("SELECT id, status FROM outbox").fetchall()
    finally:
        connection.close()
    assert {status for _, status in rows} == {"delivered"}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in hook.requests:
        bodies[request.headers["webhook-id"]].add(request.body)
    assert set(bodies) == {alert_id for alert_id, _ in rows}  # every alert, at least once
    assert all(len(b) == 1 for b in bodies.values())  # a resend is the same alert


def test_kill_9_during_ingest_and_delivery_loses_nothing_and_corrupts_nothing(
        tmp_path, records, hook):
    config = crash_ingest_repeatedly(tmp_path, records, hook, times=3, seed=9)
    crash_delivery_repeatedly(tmp_path, config, records, hook, times=3, seed=9)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_twenty_times_during_ingest_and_delivery(tmp_path, records, hook, seed):
    config = crash_ingest_repeatedly(tmp_path, records, hook, times=20, seed=seed)
    crash_delivery_repeatedly(tmp_path, config, records, hook, times=20, seed=seed)
