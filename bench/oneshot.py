"""How fast one-shot commands answer (issue 18 §10): ``list``, ``status``, ``history NCT``
and ``diff NCT`` on a database of N trials, each against the floor measured in the same
run: the time to start Python and import SQLAlchemy's ORM alone.

    python -m bench.oneshot                  # N = 10,000 trials (two versions each)
    python -m bench.oneshot --trials 1000 --rounds 5
    python -m bench.oneshot --keep /tmp/tw-bench.db   # build once, reuse on later runs

Every figure is the wall time of a fresh process (stdout read through a pipe to the end, as
a script would), and its CPU time (user + system, from ``wait4``: what a busy machine does
not inflate), the median of ``--rounds`` runs taken in turn (floor, list, status, history,
diff, floor, ...) so that a busy moment of the machine hits all of them. The target is on
wall time.
No configuration file is present and the database is named by ``--db``. Each command's
imports are also listed once (``-X importtime``) to check that none of Alembic, pydantic,
Pygments or Mako is loaded on these read-only paths.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cli_db import build, nct

TARGET_RATIO = 1.5
HEAVY = ("alembic", "pydantic", "pygments", "mako")
TRIALWATCH = Path(sys.executable).parent / "trialwatch"


def commands(url: str, trials: int) -> dict[str, list[str]]:
    one = nct(trials // 2)
    return {"list": ["list"], "status": ["status"], f"history {one}": ["history", one],
            f"diff {one}": ["diff", one]}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env["HOME"] = str(home)
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system, from the kernel's ``wait4``) of one run;
    stdout is read through a pipe to the end, as a script would."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    while process.stdout.read(1 << 16):
        pass
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # diff exits 1 when the versions differ
        raise SystemExit(f"{' '.join(argv)} failed with exit status {code}")
    return elapsed, usage.ru_utime + usage.ru_stime


def heavy_imports(argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    completed = subprocess.run([sys.executable, "-X", "importtime", "-m",
                                "trialwatch.monitor.cli", *argv[1:]], cwd=cwd, env=env,
                               capture_output=True, text=True, check=False)
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0]
              for line in completed.stderr.splitlines() if line.startswith("import time:")}
    return sorted(name for name in loaded if name in HEAVY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="database file to build once and reuse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        path = args.keep or home / "tw.db"
        if not path.exists():
            started = time.perf_counter()
            build(path, args.trials)
            print(f"built {args.trials} trials in {time.perf_counter() - started:.0f} s: {path}")
        url = f"sqlite:///{path}"
        env = _env(home)
        floor_argv = [sys.executable, "-c", "import sqlalchemy.orm"]
        runs = {name: [str(TRIALWATCH), "--db", url, *argv]
                for name, argv in commands(url, args.trials).items()}
        for argv in runs.values():  # warm the page cache and .pyc files once
            timed(argv, home, env)
        wall: dict[str, list[float]] = {"floor": [], **{name: [] for name in runs}}
        cpu: dict[str, list[float]] = {"floor": [], **{name: [] for name in runs}}
        for _ in range(args.rounds):
            for name, argv in [("floor", floor_argv), *runs.items()]:
                seconds, cpu_seconds = timed(argv, home, env)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
        floor, floor_cpu = statistics.median(wall["floor"]), statistics.median(cpu["floor"])
        print(f"N = {args.trials} trials, {args.rounds} rounds, medians; floor = Python + "
              f"`import sqlalchemy.orm`: {floor * 1000:.0f} ms wall (min "
              f"{min(wall['floor']) * 1000:.0f}), {floor_cpu * 1000:.0f} ms CPU")
        print(f"{'command':<24} {'wall':>8} {'min':>6} {'ratio':>6}  {'CPU':>7} {'ratio':>6}  "
              f"target ≤ {TARGET_RATIO}×  heavy imports")
        for name, argv in runs.items():
            median, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
            ratio, ratio_cpu = median / floor, median_cpu / floor_cpu
            verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
            heavy = ", ".join(heavy_imports(argv, home, env)) or "none"
            print(f"{name:<24} {median * 1000:>5.0f} ms {min(wall[name]) * 1000:>4.0f} "
                  f"{ratio:>5.2f}×  {median_cpu * 1000:>4.0f} ms {ratio_cpu:>5.2f}×  "
                  f"{verdict:<11} {heavy}")

if __name__ == "__main__":
    main()
