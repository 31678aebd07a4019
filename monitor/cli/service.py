"""Service commands: ``run`` (the daemon, or ``--once``) and ``status`` (what it is doing).

``status --json`` prints DESIGN.md's shape (times ISO-8601 UTC with ``Z``)::

    {"watched": 12, "queries": 1,
     "last_cycle": {"started_at", "finished_at", "outcome", "fetched", "changed", "events",
                    "requests"} | null,
     "next_cycle": "2026-11-25T18:00:00Z" | null,
     "outbox": {"ops-hook": {"pending": 0, "delivered": 3, "dead": 0}},
     "health": [{"subject": "checks", "state": "failing", "failures": 3,
                 "since": "2026-11-25T12:00:00Z", "reason": "registry: ..."}],
     "schema_version": "0001"}

``watched`` and ``queries`` are counts. ``next_cycle`` comes from the running daemon's lock
file on SQLite (null when no ``trialwatch run`` holds it); on PostgreSQL, where workers keep
no lock file, it is the last cycle's start plus the schedule. ``outbox`` lists every
configured channel (zeros when it has no rows) and any channel that still has rows.
``health`` is the monitor's own health (``trialwatch.monitor.health``): one entry per subject
(``checks``, ``channel:<name>``) that has ever failed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from trialwatch.monitor.cli.output import emit_json, say
from trialwatch.monitor.service.context import App

if TYPE_CHECKING:
    from trialwatch.monitor.config.settings import Config
    from trialwatch.monitor.service.lock import LockState
    from trialwatch.storage.engine import Database

pass_app = click.make_pass_decorator(App)


@click.command()
@click.option("--once", is_flag=True,
              help="Run one cycle and deliver, then exit (exit 1 if the cycle had failures).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus /metrics and /healthz on 127.0.0.1:PORT (0: any port).")
@pass_app
def run(app: App, once: bool, metrics_port: int | None) -> None:
    """Run the service: fetch cycles and alert delivery until stopped.

    SIGTERM or Ctrl-C lets the current step finish; a second one exits at once.

    \b
    Examples:
      trialwatch --config /etc/trialwatch/trialwatch.toml run
      trialwatch run --once          # from cron: one cycle, deliver, exit
    """
    from trialwatch.monitor.service.daemon import run_service

    code = run_service(app, once=once, metrics_port=metrics_port)
    if code:
        raise click.exceptions.Exit(code)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show what is watched, the last and next cycle, and the outbox.

    The outbox is counted per channel: alerts pending, delivered and dead.
    """
    payload, daemon = collect_status(app)
    if as_json:
        emit_json(payload)
        return
    for line in render_status(payload, daemon, database=app.database().url):
        say(line)


def collect_status(app: App) -> tuple[dict[str, Any], LockState | None]:
    """The ``status --json`` payload, and the running daemon's lock record (SQLite only).

    Without a configuration file every setting is a default: the file is neither read
    nor validated (and pydantic is not imported), so ``status`` answers at once."""
    from trialwatch.monitor.service.lock import lock_path_for, read_lock_state
    from trialwatch.monitor.views import service_status

    app.check_configuration()
    config = app.config if app.config_file is not None else None
    lock_path = lock_path_for(app.database_url)
    daemon = read_lock_state(lock_path) if lock_path is not None else None
    with app.database().transaction() as session:
        payload = service_status(
            session, next_cycle=next_cycle_function(config, database_url=app.database_url,
                                                    database=app.database()),
            channels=config.channels if config is not None else ())
    return payload, daemon


def next_cycle_function(config: Config | None, *, database_url: str | None = None,
                        database: Database | None = None
                        ) -> Callable[[datetime | None], datetime | None]:
    """When the next cycle is due, given the last one's start: on SQLite what the running
    daemon's lock file says (None when no ``trialwatch run`` holds it); on PostgreSQL,
    where workers keep no lock file, the last start plus the schedule (``config``'s, or
    the default with None), but only while a ``trialwatch run`` holds its presence lock
    on ``database`` (``storage.presence``)."""
    from trialwatch.monitor.service.lock import lock_path_for, read_lock_state

    assert config is not None or database_url is not None
    lock_path = lock_path_for(database_url or config.database.url)  # type: ignore[union-attr]
    if lock_path is not None:
        def from_lock(_last_started: datetime | None) -> datetime | None:
            state = read_lock_state(lock_path)
            return state.next_cycle if state is not None else None
        return from_lock
    from trialwatch.monitor.config.settings import ScheduleConfig
    from trialwatch.monitor.service.daemon import cycle_trigger, next_fire_function
    from trialwatch.storage.presence import daemon_present

    fire = next_fire_function(cycle_trigger(config.schedule if config is not None
                                            else ScheduleConfig()))

    def from_schedule(last_started: datetime | None) -> datetime | None:
        if last_started is None or database is None or not daemon_present(database):
            return None
        return fire(last_started)
    return from_schedule


def render_status(payload: dict[str, Any], daemon: LockState | None, *, database: str
                  ) -> list[str]:
    """The human form: one fact per line, aligned."""
    lines = [f"database     {database} (schema {payload['schema_version'] or 'none'})",
             f"watching     {_plural(payload['watched'], 'trial')}, "
             f"{_plural(payload['queries'], 'saved query', 'saved queries')}"]
    cycle = payload["last_cycle"]
    if cycle is None:
        lines.append("last cycle   never")
    else:
        lines.append(f"last cycle   {cycle['outcome']}, {cycle['started_at']} → "
                     f"{cycle['finished_at']}: {cycle['fetched']} fetched, "
                     f"{cycle['changed']} changed, {_plural(cycle['events'], 'event')}, "
                     f"{_plural(cycle['requests'], 'request')}")
    if payload["next_cycle"] is not None:
        who = f" (trialwatch run, pid {daemon.pid})" if daemon and daemon.pid else ""
        lines.append(f"next cycle   {payload['next_cycle']}{who}")
    elif daemon is not None:
        lines.append(f"next cycle   not scheduled yet (trialwatch run, pid {daemon.pid})")
    else:
        lines.append("next cycle   none scheduled: no `trialwatch run` on this database")
    if not payload["outbox"]:
        lines.append("outbox       no channels configured")
    else:
        width = max(len("channel"), *(len(name) for name in payload["outbox"]))
        lines.append(f"outbox       {'channel':<{width}}  pending  delivered  dead")
        for name, counts in payload["outbox"].items():
            lines.append(f"             {name:<{width}}  {counts['pending']:>7}  "
                         f"{counts['delivered']:>9}  {counts['dead']:>4}")
    from trialwatch.monitor.health import describe

    health = payload.get("health") or []
    if not health:
        lines.append("health       ok (no failed cycle or delivery yet)")
    for index, entry in enumerate(health):
        lines.append(f"{'health' if index == 0 else '':<12} {describe(entry)}")
    return lines


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


