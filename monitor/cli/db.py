"""``trialwatch db``: schema migrations."""

from __future__ import annotations

import click

from monitor.app import App
from monitor.errors import CommandError

pass_app = click.make_pass_decorator(App)


@click.group()
def db() -> None:
    """Database schema management."""


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Apply every pending migration (safe to run at any time)."""
    from storage.schema import upgrade as apply_migrations

    database = app.database(check_schema=False)
    try:
        before, after = apply_migrations(database)
    except Exception as exc:  # unknown revision, tables the migration meets, server errors
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CommandError(f"database {database.url}: cannot upgrade: {detail}") from None
    if before == after:
        click.echo(f"{database.url}: schema already at revision {after}")
    else:
        click.echo(f"{database.url}: schema upgraded from {before or 'empty'} to {after}")
