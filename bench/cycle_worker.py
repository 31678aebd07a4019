"""The trialwatch side of a benchmark, run as its own process (so its peak RSS is its own).

    python -m bench.cycle_worker setup DB_URL N          # schema + N watched trials
    python -m bench.cycle_worker cycle DB_URL BASE_URL   # one run_cycle; JSON on stdout

``cycle`` runs ``trialwatch.monitor.cycle.run.run_cycle`` exactly as ``trialwatch check`` / the
daemon do
(``RegistryClient(requests_per_second=0)``) and prints its figures: seconds inside
``run_cycle``, requests, strategy, fetched, changed, events, peak RSS (VmHWM).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson


def peak_rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Everything:
    """One channel subscribed to every event (so alerts are enqueued, as in production)."""

    channel = "bench"

    def matches(self, event: Mapping[str, Any], *, nct_id: str,
                query_names: set[str]) -> bool:
        return True


def setup(db_url: str, n: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from bench.synthetic import nct_of
    from trialwatch.storage.engine import open_database
    from trialwatch.storage.models import Trial
    from trialwatch.storage.schema import ensure_schema

    started = time.perf_counter()
    db = open_database(db_url)
    ensure_schema(db)
    now = datetime.now(UTC)
    with db.transaction() as session:
        for start in range(0, n, 10_000):
            session.execute(insert(Trial), [
                {"nct_id": nct_of(i), "first_seen_at": now, "latest_version": 0,
                 "watched": True} for i in range(start, min(n, start + 10_000))])
    db.close()
    return {"seconds": time.perf_counter() - started}


def cycle(db_url: str, base_url: str, profile: str | None = None) -> dict[str, Any]:
    """One ``run_cycle``. ``BENCH_MAX_URL_LENGTH`` (``--quick`` only) shrinks the client's URL
    limit so that a tiny watch list still needs several listing requests; ``BENCH_SHARED``
    ``0``/``1`` forces ``run_cycle(shared=...)`` (default: shared rounds on PostgreSQL)."""
    from trialwatch.monitor.cycle.run import run_cycle
    from trialwatch.monitor.service.logs import configure_logging
    from trialwatch.monitor.sources.ctgov.client import RegistryClient
    from trialwatch.storage.engine import open_database

    configure_logging("json", "warning")
    db = open_database(db_url)
    rss_before = peak_rss_kb()
    options: dict[str, Any] = {}
    if os.environ.get("BENCH_MAX_URL_LENGTH"):
        options["max_url_length"] = int(os.environ["BENCH_MAX_URL_LENGTH"])
    with RegistryClient(base_url, requests_per_second=0, **options) as client:
        profiler: Any = None
        if profile:  # pyinstrument is not a dependency: pip install it to profile
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        started = time.perf_counter()
        shared = {"0": False, "1": True}.get(os.environ.get("BENCH_SHARED", ""))
        report = run_cycle(db, client, subscriptions=[Everything()], shared=shared)
        seconds = time.perf_counter() - started
        if profiler is not None and profile:
            profiler.stop()
            with open(profile, "w") as out:
                out.write(profiler.output_text(unicode=False, color=False, show_all=False))
    db.close()
    return {"seconds": seconds, "requests": report.requests, "strategy": report.strategy,
            "outcome": report.outcome, "watched": report.watched, "fetched": report.fetched,
            "changed": report.changed, "events": len(report.events),
            "failures": report.failures[:3], "rss_after_imports_kb": rss_before,
            "peak_rss_kb": peak_rss_kb()}


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "setup":
        result = setup(argv[1], int(argv[2]))
    elif command == "cycle":
        result = cycle(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
    else:
        raise SystemExit(f"unknown command {command!r}")
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (not part of the cycle)


if __name__ == "__main__":
    main(sys.argv[1:])
