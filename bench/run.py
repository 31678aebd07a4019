"""trialwatch benchmarks: one command, figures against the targets of issue 8.

    python -m bench.run                      # N=10,000 watched, C=100 changed, SQLite
    python -m bench.run --db postgres        # the same on PostgreSQL (127.0.0.1:5432)
    python -m bench.run --scaling            # N = 1k, 10k, 100k with C = 1%
    python -m bench.run --quick              # tiny N: checks the harness (the smoke test)
    python -m bench.run --json out.json      # also write every figure as JSON

What runs where (three kinds of process, so each one's CPU and memory are its own):

* the registry: ``bench.synthetic`` serves N synthetic studies made from the real documents
  in ``../shared/ctgov`` (``tests/registry_server.FakeRegistry``, a real HTTP server);
* trialwatch: ``bench.cycle_worker`` runs ``trialwatch.monitor.cycle.run.run_cycle`` (the code
  ``check``
  and the daemon run) with ``RegistryClient(requests_per_second=0)``, one process per cycle;
  its peak RSS is read from the kernel (``wait4`` rusage and ``VmHWM``);
* the floor (``bench.floor``) replays the very requests of each trialwatch cycle, doing only
  JSON parsing and SHA-256 of the documents; the naive approach (``bench.naive``) makes one
  request per trial and deepdiffs raw documents, on a subset, extrapolated.

Scenarios per N: a cold first cycle (every trial fetched and stored), then ``--rounds``
steady cycles in which C trials changed, first with a realistic registry-wide churn
(``--churn`` other studies changed since the last cycle: the cycle picks the changed-since
listing), then with a churn so large that listing the watched IDs is cheaper (the cycle
picks the ``filter.ids`` listing), and one cycle with no new registry data at all.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.synthetic import MIX, ROOT, RegistryProcess, document_bytes_mean

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
FETCH_PAGE = 100
TARGET_RECORDS_PER_S = 1000
TARGET_FLOOR_RATIO = 3.0
TARGET_RSS_MB = 250
TARGET_DIFF_S = 1.0
TARGET_HELP_S = 0.3
BIG_FIXTURE = ROOT.parent / "shared" / "ctgov" / "NCT04267848.json"  # real data stays there


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_process(args: list[str], *, stdin: bytes = b"") -> dict[str, Any]:
    """Run ``python ARGS`` to completion: its JSON answer, wall time and the kernel's rusage
    for it alone (``wait4``: peak RSS, CPU seconds)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    process.stdin.close()
    out = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"python {' '.join(args[:3])} failed ({process.returncode})")
    result: dict[str, Any] = orjson.loads(out)
    result.update(process_s=time.perf_counter() - started, maxrss_kb=usage.ru_maxrss,
                  cpu_s=usage.ru_utime + usage.ru_stime)
    return result


def run_worker(*args: str) -> dict[str, Any]:
    """A ``bench.cycle_worker`` process (``setup`` or ``cycle``)."""
    return run_process(["-m", "bench.cycle_worker", *args])


def floor(root: str, targets: list[str]) -> dict[str, Any]:
    return run_process(["-m", "bench.floor", root], stdin=orjson.dumps(targets))


def naive(mode: str, base_url: str, store: Path, count: int) -> dict[str, Any]:
    return run_process(["-m", "bench.naive", mode, base_url, str(store), "0", str(count)])


# ------------------------------------------------------------------------- databases


@contextmanager
def database(kind: str, workdir: Path, label: str) -> Iterator[str]:
    """A fresh database URL (SQLite file, or a PostgreSQL database created and dropped)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    import psycopg

    name = f"trialwatch_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------- one N


def request_target(n: int, changed: int) -> int:
    """Issue 8's bound: ceil(N/1000) + ceil(C/page) + 2."""
    return math.ceil(n / 1000) + math.ceil(changed / FETCH_PAGE) + 2


def ids_listing_requests(n: int, base_url: str) -> int:
    from trialwatch.monitor.sources.ctgov.client import RegistryClient

    limit = int(os.environ.get("BENCH_MAX_URL_LENGTH") or 0)
    with RegistryClient(base_url, requests_per_second=0) as client:
        if limit:
            client.max_url_length = limit
        return client.listing_requests(n)


def steady_round(registry: RegistryProcess, db_url: str, changed: int,
                 round_number: int) -> dict[str, Any]:
    """C studies change, the registry loads new data; one trialwatch cycle, then the floor
    replaying the same requests."""
    registry.change(changed, round_number)
    registry.new_data_load()
    registry.mark()
    cycle = run_worker("cycle", db_url, registry.base_url)
    targets = registry.requests_since_mark()
    base = floor(registry.root, targets)
    return {"cycle": cycle, "floor": base, "ratio": cycle["seconds"] / base["seconds"]}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def median(get: Any) -> float:
        return statistics.median(get(r) for r in rounds)

    return {
        "strategy": sorted({r["cycle"]["strategy"] for r in rounds}),
        "requests": sorted({r["cycle"]["requests"] for r in rounds}),
        "fetched": median(lambda r: r["cycle"]["fetched"]),
        "events": median(lambda r: r["cycle"]["events"]),
        "cycle_s": median(lambda r: r["cycle"]["seconds"]),
        "cycle_cpu_s": median(lambda r: r["cycle"]["cpu_s"]),
        "floor_s": median(lambda r: r["floor"]["seconds"]),
        "ratio": median(lambda r: r["ratio"]),
        "ratios": [round(r["ratio"], 2) for r in rounds],
        "peak_rss_mb": max(r["cycle"]["maxrss_kb"] for r in rounds) / 1024,
        "rounds": rounds,
    }


def bench_n(n: int, changed: int, *, rounds: int, churn: int, db_kind: str, workdir: Path,
            naive_subset: int, log: Any = print) -> dict[str, Any]:
    if db_kind == "postgres":
        db_kind += " (single cycle)" if os.environ.get("BENCH_SHARED") == "0" else \
            " (shared round)"
    result: dict[str, Any] = {"n": n, "changed": changed, "db": db_kind, "churn": churn,
                              "request_target": request_target(n, changed)}
    with RegistryProcess(n) as registry, \
            database(db_kind.split()[0], workdir, f"bench_{n}") as db_url:
        result["setup"] = run_worker("setup", db_url, str(n))
        log(f"[N={n:,} {db_kind}] cold cycle ...")
        registry.mark()
        registry_cpu = registry.cpu_seconds()
        cold = run_worker("cycle", db_url, registry.base_url)
        cold["registry_cpu_s"] = registry.cpu_seconds() - registry_cpu
        cold_floor = floor(registry.root, registry.requests_since_mark())
        cold["records_per_s"] = cold["fetched"] / cold["seconds"]
        cold["peak_rss_mb"] = cold["maxrss_kb"] / 1024
        result["cold"] = cold
        result["cold_floor"] = cold_floor
        log(f"  {cold['fetched']:,} records in {cold['seconds']:.2f} s = "
            f"{cold['records_per_s']:,.0f} records/s, {cold['requests']} requests, "
            f"peak RSS {cold['peak_rss_mb']:.0f} MB, CPU {cold['cpu_s']:.1f} s (registry "
            f"{cold['registry_cpu_s']:.1f} s); floor {cold_floor['seconds']:.2f} s")
        store = workdir / f"naive_{n}.sqlite"
        subset = min(naive_subset, n)
        if subset:
            result["naive_cold"] = naive("cold", registry.base_url, store, subset)
            result["naive_cold"]["subset"] = subset
            per = result["naive_cold"]["seconds"] / subset
            result["naive_cold"]["extrapolated_s"] = per * n
            log(f"  naive cold: {subset:,} trials in {result['naive_cold']['seconds']:.2f} s"
                f" -> {per * n:.1f} s for {n:,} ({1 / per:,.0f} records/s)")

        registry.churn(churn)
        rounds_cs = [steady_round(registry, db_url, changed, r + 1) for r in range(rounds)]
        result["steady_changed_since"] = summarize(rounds_cs)
        _log_steady(log, "changed-since", result["steady_changed_since"])

        by_ids = ids_listing_requests(n, registry.base_url)
        result["ids_listing_requests"] = by_ids
        if by_ids > 2:  # make the registry-wide listing dearer than listing our IDs
            registry.churn(max(churn, 1000 * (by_ids + 1)))
        rounds_ids = [steady_round(registry, db_url, changed, rounds + r + 1)
                      for r in range(rounds)]
        result["steady_ids"] = summarize(rounds_ids)
        _log_steady(log, "ids", result["steady_ids"])

        registry.mark()
        result["unchanged"] = run_worker("cycle", db_url, registry.base_url)
        log(f"  no new registry data: {result['unchanged']['requests']} request, "
            f"{result['unchanged']['seconds'] * 1000:.0f} ms")

        if subset:
            result["naive_steady"] = naive("steady", registry.base_url, store, subset)
            result["naive_steady"]["subset"] = subset
            per = result["naive_steady"]["seconds"] / subset
            result["naive_steady"]["extrapolated_s"] = per * n
            log(f"  naive steady: {subset:,} trials in "
                f"{result['naive_steady']['seconds']:.2f} s -> {per * n:.1f} s for {n:,}")
    return result


def _log_steady(log: Any, name: str, s: dict[str, Any]) -> None:
    log(f"  steady ({name}): {s['strategy']} {s['requests']} requests, cycle "
        f"{s['cycle_s'] * 1000:.0f} ms vs floor {s['floor_s'] * 1000:.0f} ms = "
        f"{s['ratio']:.2f}x (rounds {s['ratios']}), {s['fetched']:.0f} fetched, "
        f"{s['events']:.0f} events, peak RSS {s['peak_rss_mb']:.0f} MB")


# ------------------------------------------------------------------------- the CLI


def modified_big_fixture(path: Path) -> None:
    """A second version of the 1,148-site record: status, enrollment, one outcome's time
    frame, one site added, one removed, one site's status, and a new last-update date."""
    doc = orjson.loads(BIG_FIXTURE.read_bytes())
    ps = doc["protocolSection"]
    ps["statusModule"]["overallStatus"] = "ACTIVE_NOT_RECRUITING"
    ps["statusModule"]["lastUpdatePostDateStruct"] = {"date": "2025-10-01", "type": "ACTUAL"}
    ps["designModule"]["enrollmentInfo"]["count"] += 25
    outcomes = ps["outcomesModule"]["primaryOutcomes"]
    outcomes[0]["timeFrame"] = outcomes[0].get("timeFrame", "") + " (revised)"
    sites = ps["contactsLocationsModule"]["locations"]
    sites[10]["status"] = "COMPLETED"
    del sites[500]
    sites.append({"facility": "Benchmark Research Hospital", "city": "Springfield",
                  "country": "United States", "status": "RECRUITING"})
    path.write_bytes(orjson.dumps(doc))


def timed(command: list[str], *, cwd: Path, repeat: int, ok: tuple[int, ...] = (0,)
          ) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, env=_cli_env())
        times.append(time.perf_counter() - started)
        if done.returncode not in ok:
            raise RuntimeError(f"{command}: exit {done.returncode}: {done.stderr.decode()}")
    return {"median_s": statistics.median(times), "max_s": max(times),
            "min_s": min(times), "runs": len(times)}


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return {**env, "TRIALWATCH_LOG_LEVEL": "warning"}


def trialwatch_executable() -> str:
    found = Path(sys.executable).with_name("trialwatch")
    return str(found) if found.exists() else (shutil.which("trialwatch") or "trialwatch")


def bench_cli(workdir: Path, *, repeat: int, log: Any = print) -> dict[str, Any]:
    """``trialwatch diff NCT`` on two stored versions of the 1,148-site record, and
    ``trialwatch --help``, as whole processes (interpreter start-up included)."""
    cli = trialwatch_executable()
    folder = workdir / "cli"
    (folder / "v1").mkdir(parents=True, exist_ok=True)
    (folder / "v2").mkdir(parents=True, exist_ok=True)
    shutil.copy(BIG_FIXTURE, folder / "v1" / BIG_FIXTURE.name)
    modified_big_fixture(folder / "v2" / BIG_FIXTURE.name)
    db = ["--db", f"sqlite:///{folder / 'cli.db'}"]
    for version in ("v1", "v2"):
        subprocess.run([cli, *db, "ingest", "--no-notify", str(folder / version)], cwd=folder,
                       check=True, capture_output=True, env=_cli_env())
    nct_id = BIG_FIXTURE.stem
    diff = timed([cli, *db, "diff", nct_id], cwd=folder, repeat=repeat, ok=(1,))
    diff_json = timed([cli, *db, "diff", nct_id, "--json"], cwd=folder, repeat=repeat, ok=(1,))
    events = orjson.loads(subprocess.run([cli, *db, "diff", nct_id, "--json"], cwd=folder,
                                         capture_output=True, env=_cli_env()).stdout)["events"]
    help_ = timed([cli, "--help"], cwd=folder, repeat=repeat)
    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "trialwatch.monitor.cli",
                              "--help"], cwd=folder, capture_output=True, env=_cli_env())
    modules = {line.split("|")[-1].strip() for line in imports.stderr.decode().splitlines()
               if line.startswith("import time:")}
    heavy = sorted(m for m in ("sqlalchemy", "deepdiff", "httpx", "pydantic", "structlog",
                               "alembic", "starlette", "jinja2", "orjson") if m in modules)
    result = {"diff": diff, "diff_json": diff_json, "diff_events": len(events),
              "help": help_, "heavy_imports_for_help": heavy}
    log(f"[CLI] diff {nct_id} (1,148 sites, {len(events)} events): median "
        f"{diff['median_s']:.2f} s (max {diff['max_s']:.2f}); --json {diff_json['median_s']:.2f}"
        f" s; --help median {help_['median_s']:.3f} s (max {help_['max_s']:.3f}); heavy "
        f"imports for --help: {heavy or 'none'}")
    return result


# ------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "loadavg_start": os.getloadavg()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
        with open("/proc/meminfo") as meminfo:
            info["mem_total_mb"] = int(meminfo.readline().split()[1]) // 1024
    except OSError:
        pass
    info["mean_document_kb"] = document_bytes_mean() / 1000
    info["mix"] = [name for name, _ in MIX]
    return info


def verdicts(r: dict[str, Any]) -> list[str]:
    """One line per target for one N (meaningful at N=10,000)."""
    lines = []
    bound = r["request_target"]
    for key, name in (("steady_changed_since", "changed-since"), ("steady_ids", "ids")):
        s = r[key]
        worst = max(s["requests"])
        lines.append(f"1. requests ({name}): {worst} vs bound {bound} -> "
                     f"{'OK' if worst <= bound else 'MISSED'}")
    for key, name in (("steady_changed_since", "changed-since"), ("steady_ids", "ids")):
        s = r[key]
        lines.append(f"2. steady cycle ({name}): {s['cycle_s'] * 1000:.0f} ms vs floor "
                     f"{s['floor_s'] * 1000:.0f} ms = {s['ratio']:.2f}x (target <= "
                     f"{TARGET_FLOOR_RATIO:.0f}x) -> "
                     f"{'OK' if s['ratio'] <= TARGET_FLOOR_RATIO else 'MISSED'}")
    cold = r["cold"]
    naive_part = ""
    if "naive_cold" in r:
        naive_part = (f"; naive {r['naive_cold']['extrapolated_s']:.1f} s for "
                      f"{r['n']:,} (from {r['naive_cold']['subset']:,})")
    lines.append(f"3. cold import: {cold['records_per_s']:,.0f} records/s "
                 f"({cold['seconds']:.1f} s){naive_part} -> "
                 f"{'OK' if cold['records_per_s'] >= TARGET_RECORDS_PER_S else 'MISSED'}")
    lines.append(f"4. peak RSS cold: {cold['peak_rss_mb']:.0f} MB -> "
                 f"{'OK' if cold['peak_rss_mb'] < TARGET_RSS_MB else 'MISSED'}")
    return lines


def scaling_table(results: list[dict[str, Any]]) -> str:
    rows = ["| N | C | cold cycle | cold records/s | cold requests | cold peak RSS | "
            "steady, registry churn 3,000: time / requests (strategy) | "
            "steady, churn > ids listing: time / requests (strategy) | "
            "floor of the latter | no new data: time / requests |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cs, ids, cold = r["steady_changed_since"], r["steady_ids"], r["cold"]
        rows.append(
            f"| {r['n']:,} | {r['changed']:,} | {cold['seconds']:.1f} s | "
            f"{cold['records_per_s']:,.0f} | {cold['requests']} | {cold['peak_rss_mb']:.0f} MB |"
            f" {cs['cycle_s'] * 1000:,.0f} ms / {max(cs['requests'])} ({cs['strategy'][0]}) |"
            f" {ids['cycle_s'] * 1000:,.0f} ms / {max(ids['requests'])} ({ids['strategy'][0]}) |"
            f" {ids['floor_s'] * 1000:,.0f} ms |"
            f" {r['unchanged']['seconds'] * 1000:.0f} ms / {r['unchanged']['requests']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="watched trials")
    parser.add_argument("--changed", type=int, default=100, help="trials changed per cycle")
    parser.add_argument("--rounds", type=int, default=5, help="steady cycles per strategy")
    parser.add_argument("--churn", type=int, default=3000,
                        help="other registry studies changed since the last cycle")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-single", action="store_true",
                        help="PostgreSQL: run_cycle(shared=False), one process's cycle "
                             "instead of the multi-worker shared round (the default there)")
    parser.add_argument("--naive-subset", type=int, default=1000,
                        help="trials the naive approach runs on (0: skip), extrapolated to N")
    parser.add_argument("--scaling", action="store_true",
                        help="N = 1,000, 10,000, 100,000 with C = 1%% (2 rounds each)")
    parser.add_argument("--no-cli", action="store_true", help="skip the diff/--help timings")
    parser.add_argument("--quick", action="store_true",
                        help="tiny N, one round: checks that the harness works")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.changed, args.rounds, args.churn = 300, 5, 1, 50
        args.naive_subset = min(args.naive_subset, 20)
        # ~60 IDs per listing request instead of ~600, so 300 trials take 5 listing
        # requests and both listing strategies are exercised
        os.environ["BENCH_MAX_URL_LENGTH"] = "1000"

    if args.pg_single:
        os.environ["BENCH_SHARED"] = "0"
    report: dict[str, Any] = {"machine": machine(), "argv": sys.argv[1:] if argv is None
                              else argv, "runs": []}
    workdir = Path(tempfile.mkdtemp(prefix="trialwatch-bench-"))
    started = time.perf_counter()
    try:
        sizes = [(1_000, 10), (10_000, 100), (100_000, 1_000)] if args.scaling else [
            (args.n, args.changed)]
        for n, changed in sizes:
            rounds = 2 if args.scaling else args.rounds
            subset = 0 if args.scaling else args.naive_subset
            result = bench_n(n, changed, rounds=rounds, churn=args.churn, db_kind=args.db,
                             workdir=workdir, naive_subset=subset)
            report["runs"].append(result)
            if not args.scaling:
                for line in verdicts(result):
                    print(line)
        if args.scaling:
            report["scaling_table"] = scaling_table(report["runs"])
            print(report["scaling_table"])
        if not args.no_cli:
            report["cli"] = bench_cli(workdir, repeat=1 if args.quick else 7)
            cli = report["cli"]
            print(f"5. diff median {cli['diff']['median_s']:.2f} s, max "
                  f"{cli['diff']['max_s']:.2f} s (< {TARGET_DIFF_S:.0f} s); --help median "
                  f"{cli['help']['median_s']:.3f} s (< {TARGET_HELP_S} s) -> "
                  f"{'OK' if cli['diff']['median_s'] < TARGET_DIFF_S else 'MISSED'} / "
                  f"{'OK' if cli['help']['median_s'] < TARGET_HELP_S else 'MISSED'}")
    finally:
        report["machine"]["loadavg_end"] = os.getloadavg()
        report["total_s"] = time.perf_counter() - started
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average start {report['machine']['loadavg_start']}, end "
          f"{report['machine']['loadavg_end']}; total {report['total_s']:.0f} s")
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


if __name__ == "__main__":
    main()
