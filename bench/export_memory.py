"""Does ``trialwatch export`` stream (issue 18 §6)? Peak memory of ``export events`` at
3,000, 10,000 and 100,000 stored events, in every format.

    python -m bench.export_memory                 # 1,000 trials; events up to 100,000
    python -m bench.export_memory --events 300000

The database is built through trialwatch's own recording path (``bench.cli_db``: 1,000
trials of two versions, three events each), then grown with copies of those events, each
step in a process of its own (a child's peak RSS starts at its parent's size when it is
forked, so this process stays small). Each export is a fresh process whose output is read
through a pipe and counted; its peak RSS comes from the kernel (``wait4`` rusage).
Streaming means the peak stays flat as the events grow tenfold; the figure to compare with
is the first row (the same command on 3,000 events), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIALWATCH = Path(sys.executable).parent / "trialwatch"
FORMATS = ("csv", "ndjson", "json")
TARGET_GROWTH_MB = 10.0  # flat: well under what 100,000 events held in memory would take


def measure(url: str, output_format: str, home: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, output lines) of one ``export events`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env["HOME"] = str(home)
    started = time.perf_counter()
    process = subprocess.Popen([str(TRIALWATCH), "--db", url, "export", "events", "--format",
                                output_format], stdout=subprocess.PIPE, cwd=home, env=env)
    assert process.stdout is not None
    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: process.stdout.read(1 << 16), b""))
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"export --format {output_format} failed ({process.returncode})")
    return usage.ru_maxrss / 1024, time.perf_counter() - started, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        path = home / "tw.db"
        url = f"sqlite:///{path}"
        base: dict[str, float] = {}
        worst = 0.0
        print(f"{'events':>8} {'format':<7} {'peak RSS':>9} {'growth':>8} {'time':>7} "
              f"{'rows/s':>8}")
        for total in (args.trials * 3, args.events // 10, args.events):
            subprocess.run([sys.executable, "-m", "bench.cli_db", str(path), "--trials",
                            str(args.trials), "--events", str(total)], check=True)
            for output_format in FORMATS:
                rss, seconds, lines = measure(url, output_format, home)
                rows = lines - {"csv": 1, "ndjson": 0, "json": 2}[output_format]
                base.setdefault(output_format, rss)
                growth = rss - base[output_format]
                worst = max(worst, growth)
                print(f"{rows:>8} {output_format:<7} {rss:>6.1f} MB {growth:>+5.1f} MB "
                      f"{seconds:>5.2f} s {rows / seconds:>8.0f}")
        verdict = "met" if worst <= TARGET_GROWTH_MB else "MISSED"
        print(f"largest growth {worst:+.1f} MB from {args.trials * 3:,} to {args.events:,} "
              f"events; target ≤ {TARGET_GROWTH_MB:.0f} MB: {verdict}")


if __name__ == "__main__":
    main()
