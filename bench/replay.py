"""Requests per cycle over 36 real days: one ``check`` per daily data load at ~1,150 trials.

    python -m bench.replay [--days N] [--compare] [--json out.json]

Replays ``../shared/ctgov/replay/ctgov-36-days.tar.xz`` through the local registry stand-in
(``tests/replay.py``: each day's captures served, the day's date as ``dataTimestamp``) and
runs ``trialwatch check --json`` once per day with the defaults (``ctgov.reverify_every =
7d``). Prints the requests of every cycle, their mean (target: ≤ 8) and, as the floor, what
an oracle that knows which records changed would need in the same run: ``/version``, the
ID listing of every watched trial, and one fetch page per 100 records whose content moved
(re-verification finds what moves silently; the oracle needs no re-verification).
``--compare`` also ingests the captures file by file and checks that both paths report the
same events (what ``tests/test_replay.py`` asserts).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from replay import ARCHIVE, Day, extract, load_days, replay, restrict  # noqa: E402

from trialwatch.monitor.cycle.fetching import FETCH_PAGE  # noqa: E402
from trialwatch.monitor.sources.ctgov.client import RegistryClient  # noqa: E402
from trialwatch.monitor.sources.ctgov.parser import parse_study  # noqa: E402


def oracle_requests(days: list[Day], folder: Path) -> list[int]:
    """Per day: what a client that knows which records changed content needs at least."""
    served: dict[str, str] = {}
    hashes: dict[str, str] = {}
    ids_per_request = RegistryClient("http://127.0.0.1/api/v2").ids_per_listing_request()
    floor = []
    for day in days:
        moved = 0
        for nct_id, path in day.trials.items():
            before = served.get(nct_id)
            served[nct_id] = path
            if before == path:
                continue
            for known in (before, path):
                if known is not None and known not in hashes:
                    document = orjson.loads((folder / known).read_bytes())
                    hashes[known] = parse_study(document).content_hash
            if before is None or hashes[before] != hashes[path]:
                moved += 1
        listing = math.ceil(len(served) / ids_per_request)
        floor.append(1 + listing + math.ceil(moved / FETCH_PAGE))
    return floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=36, help="replay the first N days")
    parser.add_argument("--compare", action="store_true",
                        help="also ingest the files and check both paths agree")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if not ARCHIVE.exists():
        print(f"bench.replay: the captures are not here: {ARCHIVE}", file=sys.stderr)
        return 2
    days = restrict(load_days(), None, first=0, last=args.days - 1)
    with tempfile.TemporaryDirectory(prefix="trialwatch-replay-") as tmp:
        folder = Path(tmp) / "captures"
        extract(days, folder)
        started = time.perf_counter()
        results = replay(days, folder, Path(tmp) / "work", ingest=args.compare,
                         settle_days=8 if args.compare else 0)
        seconds = time.perf_counter() - started
        floor = oracle_requests(days, folder)
    requests = [r.requests for r in results[:len(days)]]
    figures: dict[str, Any] = {
        "days": len(days), "watched_last_day": sum(1 for _ in _served(days)),
        "requests": requests, "mean_requests": sum(requests) / len(requests),
        "max_requests": max(requests), "floor": floor,
        "mean_floor": sum(floor) / len(floor),
        "ratio_to_floor": sum(requests) / sum(floor), "seconds": round(seconds, 1),
        "events": sum(len(r.check_events) for r in results)}
    if args.compare:
        from test_replay import assert_live_equals_files

        assert_live_equals_files(results)
        figures["live_equals_files"] = True
    print(f"{figures['days']} daily cycles, {figures['watched_last_day']} trials watched at "
          f"the end: {figures['mean_requests']:.2f} requests per cycle (max "
          f"{figures['max_requests']}); floor {figures['mean_floor']:.2f} "
          f"({figures['ratio_to_floor']:.2f}x); {figures['events']} events; "
          f"{figures['seconds']} s")
    print("per cycle:", " ".join(map(str, requests)))
    print("floor:    ", " ".join(map(str, floor)))
    if args.json:
        args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    return 0


def _served(days: list[Day]) -> set[str]:
    return {nct_id for day in days for nct_id in day.trials}


if __name__ == "__main__":
    raise SystemExit(main())
