"""The benchmark harness (``python -m bench.run``), so it cannot rot.

The default run takes it at a tiny N (``--quick``: 300 trials, a few seconds) and checks that
every scenario ran and reports consistent figures. The full runs (N = 10,000 and the
N = 1k/10k/100k scaling) are ``slow``: ``pytest -m slow tests/test_bench_smoke.py``; they
assert the targets of issue 8, and the targets ``bench/RESULTS.md`` records as missed on
the reference machine are ``xfail`` with the reason, not silently dropped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shared_data import shared_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _real_documents() -> None:
    """The benchmarks build their registry from the real documents in ../shared/ctgov."""
    shared_path("ctgov")


def run_bench(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "bench.run", *args, "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_quick_benchmark_runs_every_scenario_with_consistent_figures(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--quick", timeout=300)
    run = report["runs"][0]
    n, changed = run["n"], run["changed"]
    assert (n, changed) == (300, 5)

    cold = run["cold"]
    assert cold["outcome"] == "ok" and cold["strategy"] == "ids"
    assert cold["fetched"] == cold["changed"] == n and cold["events"] == 0
    listing = run["ids_listing_requests"]
    assert listing > 2  # the quick run's short URLs make the changed-since listing worth it
    # version, listing, pages of 100 documents (the quick run's short URLs split them)
    assert cold["requests"] >= 1 + listing + math.ceil(n / 100)
    assert run["cold_floor"]["requests"] == cold["requests"]
    assert run["cold_floor"]["documents"] == n
    assert 0 < cold["peak_rss_mb"] < 1000 and cold["records_per_s"] > 0

    since = run["steady_changed_since"]
    assert since["strategy"] == ["changed-since"]
    assert since["fetched"] == changed and since["events"] > 0
    # version, one changed-since page (it carries the count), the listing of the registry's
    # own switches to UNKNOWN (one page), one fetch page
    assert since["requests"] == [4] and run["request_target"] >= 4
    for one in since["rounds"]:
        assert one["floor"]["requests"] == one["cycle"]["requests"]
        assert one["floor"]["documents"] == changed
        assert one["ratio"] > 0

    by_ids = run["steady_ids"]
    assert by_ids["strategy"] == ["ids"]
    assert by_ids["fetched"] == changed and by_ids["events"] > 0
    # version, the changed-since first page (its count said listing the IDs is cheaper),
    # the ID listing, one fetch page
    assert by_ids["requests"] == [1 + 1 + listing + 1]

    assert run["unchanged"]["strategy"] == "unchanged-data"
    assert run["unchanged"]["requests"] == 1

    assert run["naive_cold"]["trials"] == run["naive_steady"]["trials"] == 20
    assert run["naive_cold"]["extrapolated_s"] > 0

    cli = report["cli"]
    assert cli["diff_events"] >= 5  # status, enrollment, outcome, sites added/removed/changed
    assert cli["diff"]["median_s"] > 0 and cli["help"]["median_s"] > 0
    assert "sqlalchemy" not in cli["heavy_imports_for_help"]


# ---------------------------------------------------------------------------- full runs


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_bench(tmp_path_factory.mktemp("bench"), "--n", "10000", "--changed", "100",
                     "--rounds", "5", "--naive-subset", "500", timeout=3600)


@pytest.mark.slow
def test_requests_per_cycle_at_10k(full_run: dict[str, Any]) -> None:
    run = full_run["runs"][0]
    assert max(run["steady_changed_since"]["requests"]) <= run["request_target"]
    assert run["unchanged"]["requests"] == 1


@pytest.mark.slow
@pytest.mark.xfail(reason="listing 10,000 IDs takes 17 requests: URLs are capped at ~7,500 "
                          "characters (~600 IDs), not 1,000 per request (bench/RESULTS.md)",
                   strict=False)
def test_requests_per_cycle_at_10k_listing_by_ids(full_run: dict[str, Any]) -> None:
    run = full_run["runs"][0]
    assert max(run["steady_ids"]["requests"]) <= run["request_target"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["steady_changed_since", "steady_ids"])
def test_steady_cycle_within_three_times_the_floor(full_run: dict[str, Any],
                                                   strategy: str) -> None:
    assert full_run["runs"][0][strategy]["ratio"] <= 3.0


@pytest.mark.slow
def test_cold_import_of_10k_at_1000_records_per_second(full_run: dict[str, Any]) -> None:
    run = full_run["runs"][0]
    assert run["cold"]["records_per_s"] >= 1000
    assert run["cold"]["seconds"] < run["naive_cold"]["extrapolated_s"]


@pytest.mark.slow
def test_cold_import_beats_the_naive_approach(full_run: dict[str, Any]) -> None:
    run = full_run["runs"][0]
    assert run["cold"]["seconds"] * 5 < run["naive_cold"]["extrapolated_s"]
    assert run["steady_ids"]["cycle_s"] * 50 < run["naive_steady"]["extrapolated_s"]


@pytest.mark.slow
def test_peak_rss_of_the_cold_cycle_at_10k(full_run: dict[str, Any]) -> None:
    assert full_run["runs"][0]["cold"]["peak_rss_mb"] < 250


@pytest.mark.slow
def test_diff_and_help_as_processes(full_run: dict[str, Any]) -> None:
    cli = full_run["cli"]
    assert cli["diff"]["median_s"] < 1.0
    assert cli["help"]["median_s"] < 0.3
    assert not {"sqlalchemy", "httpx", "pydantic", "deepdiff"} & set(
        cli["heavy_imports_for_help"])


@pytest.mark.slow
def test_scaling_follows_listing_pages_and_changes_not_watch_list_size(
        tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--scaling", "--no-cli", timeout=4 * 3600)
    runs = {r["n"]: r for r in report["runs"]}
    assert set(runs) == {1_000, 10_000, 100_000}
    for n, run in runs.items():
        since = run["steady_changed_since"]
        assert max(since["requests"]) <= run["request_target"], n
        listing = run["ids_listing_requests"]
        count = 1 if listing > 2 else 0  # the changed-since count is asked only if it can win
        assert run["steady_ids"]["requests"][0] == 1 + count + listing + \
            math.ceil(run["changed"] / 100)
    # the steady cycle's cost follows the changed trials, not the size of the watch list:
    # per changed trial it is no dearer at 100,000 than at 10,000, and a small fraction
    # of what the cold cycle (every document) costs
    per_changed = {n: run["steady_changed_since"]["cycle_s"] / run["changed"]
                   for n, run in runs.items()}
    assert per_changed[100_000] < 1.5 * per_changed[10_000]
    assert runs[100_000]["steady_changed_since"]["cycle_s"] < \
        0.05 * runs[100_000]["cold"]["seconds"]
    assert runs[100_000]["cold"]["peak_rss_mb"] < 250
