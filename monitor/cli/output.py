"""How commands speak: JSON on stdout for scripts, aligned text for people."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from typing import Any, TypeVar

import click
import orjson

from trialwatch.monitor.redaction import terminal_line

T = TypeVar("T")


def emit_json(value: Any) -> None:
    """Machine-readable output: JSON on stdout only (logs go to stderr)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def render_events(events: Sequence[dict[str, Any]], *, indent: str = "  ") -> list[str]:
    """One aligned line per event, most severe first (then in kind order, as ``--json``
    lists them): ``status  high  Recruitment status: ...``."""
    if not events:
        return [f"{indent}(no changes)"]
    width = max(len(e["kind"]) for e in events)
    lines = []
    for event in sorted(events, key=_most_severe_first):
        lines.append(f"{indent}{event['kind']:<{width}}  {event['severity']:<6}  "
                     f"{event['summary']}")
    return lines


def _most_severe_first(event: dict[str, Any]) -> tuple[int, int]:
    from trialwatch.monitor.events import KINDS, SEVERITY_RANK

    kind = event["kind"]
    return (-SEVERITY_RANK.get(event["severity"], 0),
            KINDS.index(kind) if kind in KINDS else len(KINDS))


def say(line: str) -> None:
    """One line of human output on stdout. Registry text in it cannot drive the terminal
    or forge a row: line breaks and control characters are replaced (``--json`` is exact)."""
    click.echo(terminal_line(line))


def echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        say(line)


@contextmanager
def stdout_reserved(for_json: bool) -> Iterator[None]:
    """While ``--json`` owns stdout, anything else printed there (a console channel's
    alerts) goes to stderr instead, so stdout stays one JSON document."""
    if not for_json:
        yield
        return
    with redirect_stdout(sys.stderr):
        yield


@contextmanager
def progress(items: Sequence[T], label: str) -> Iterator[Iterable[T]]:
    """A progress bar on a terminal (stderr); on a pipe (cron, systemd) a ``progress`` log
    line (``task``: ``label``) at most every few seconds (``trialwatch.monitor.progress``)."""
    if sys.stderr.isatty() and len(items) > 1:
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield bar
    else:
        from trialwatch.monitor.progress import ProgressLog

        yield ProgressLog(label, total=len(items)).over(items)
