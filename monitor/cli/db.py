"""``trialwatch db``: schema migrations, and moving a database to another server."""

from __future__ import annotations

import sys
from typing import Any

import click

from trialwatch.monitor.cli.help import HelpGroup
from trialwatch.monitor.cli.output import say
from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)


@click.group(cls=HelpGroup)
def db() -> None:
    """Upgrade the database schema, or copy it to another server."""


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Apply every pending migration (safe to run at any time)."""
    from trialwatch.storage.schema import upgrade as apply_migrations

    database = app.database(check_schema=False)
    try:
        before, after = apply_migrations(database)
    except Exception as exc:  # unknown revision, tables the migration meets, server errors
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CommandError(f"database {database.url}: cannot upgrade: {detail}") from None
    if before == after:
        say(f"{database.url}: schema already at revision {after}")
    else:
        say(f"{database.url}: schema upgraded from {before or 'empty'} to {after}")


@db.command("migrate-to")
@click.argument("url", metavar="URL")
@pass_app
def migrate_to(app: App, url: str) -> None:
    """Copy this database, whole, into the empty database at URL (e.g. SQLite → PostgreSQL).

    Every trial, version, event, outbox alert, saved query and cycle is copied in one
    transaction on the target, whose schema is created first; row counts are then compared
    table by table. A target that is not empty is refused. Stop trialwatch run first.

    \b
    Example:
      trialwatch --db sqlite:///trialwatch.db db migrate-to postgresql://tw@db.example.org/tw
    """
    from trialwatch.storage.engine import DatabaseError, normalize_url, open_database
    from trialwatch.storage.schema import is_empty
    from trialwatch.storage.transfer import TransferError, copy_database

    source = app.database(check_schema=False)
    if is_empty(source):
        raise CommandError(f"database {source.url}: empty, nothing to migrate")
    try:
        target = open_database(normalize_url(url))
    except DatabaseError as exc:
        raise CommandError(str(exc)) from None
    label = target.url
    bar: Any = None
    try:
        def start(counts: dict[str, int]) -> None:
            nonlocal bar
            if sys.stderr.isatty():
                bar = click.progressbar(length=sum(counts.values()), label="copying rows",
                                        file=sys.stderr)
                bar.__enter__()

        def rows(_table: str, count: int) -> None:
            if bar is not None:
                bar.update(count)

        report = copy_database(source, target, on_start=start, on_rows=rows)
    except TransferError as exc:
        raise CommandError(f"migrate-to {label}: {exc}") from None
    except Exception as exc:  # server unreachable, bad credentials, permissions, ...
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise CommandError(f"migrate-to {label}: {detail or type(exc).__name__}") from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        target.close()
    counts = report.counts
    say(f"{source.url} -> {label}: copied {counts['trials']} trials, "
        f"{counts['versions']} versions, {counts['events']} events, "
        f"{counts['outbox']} outbox alerts, {counts['queries']} saved queries, "
        f"{counts['cycles']} cycles ({report.total} rows, schema {report.revision}); "
        "row counts verified")
