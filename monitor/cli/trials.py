"""``trialwatch list``: what am I watching? Trials (or saved searches) in a table or as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from trialwatch.monitor.cli.output import emit_json
from trialwatch.monitor.errors import CommandError, UsageProblem
from trialwatch.monitor.events import KINDS, humanize, shorten
from trialwatch.monitor.redaction import terminal_line
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)

TRIAL_COLUMNS = ("TRIAL", "STATUS", "PHASE", "VERSION", "LAST CHANGE", "TITLE")
QUERY_COLUMNS = ("NAME", "TERM", "CONDITION", "MATCHES", "LAST RUN")
LEGEND = ("* watched, x removed from the registry (no longer served), no mark: stored but "
          "not watched")
TITLE_WIDTH = 60


@click.command("list")
@click.option("--status", metavar="STATUS",
              help="Only trials with this recruitment status (e.g. recruiting, completed).")
@click.option("--kind", type=click.Choice(KINDS), metavar="KIND",
              help="Only trials that have had a change of this kind: " + ", ".join(KINDS) + ".")
@click.option("--query", "query_name", metavar="NAME",
              help="Only trials matched by this saved search (see list --queries).")
@click.option("--watched/--all", "watched_only", default=False,
              help="Only watched trials, or every trial in the database (the default).")
@click.option("--queries", "show_queries", is_flag=True,
              help="List the saved searches instead: name, term, condition, matches, last run.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON list on stdout.")
@pass_app
def list_trials(app: App, status: str | None, kind: str | None, query_name: str | None,
                watched_only: bool, show_queries: bool, as_json: bool) -> None:
    """List trials: watched, matched by a saved search, or ingested.

    One row per trial: its recruitment status, phase, latest stored version and last
    change (the registry's posting date of the newest version that changed something, and
    its most severe kind of change). Trials named in the configuration's [watch] are listed
    before the first check has stored them.

    \b
    Examples:
      trialwatch list --watched --status recruiting
      trialwatch list --kind results --json
      trialwatch list --queries
    """
    from trialwatch.monitor.trial_table import query_rows, trial_rows

    declared_trials, declared_queries = _declared(app)
    db = app.database()
    if show_queries:
        if status or kind or query_name or watched_only:
            raise UsageProblem("--queries lists saved searches: it takes no trial filters")
        with db.transaction() as session:
            queries = query_rows(session, declared_queries)
        if as_json:
            emit_json(queries)
        else:
            _echo_queries(queries)
        return
    with db.transaction() as session:
        if query_name is not None:
            _known_query(session, query_name)
        rows = trial_rows(session, status=status, kind=kind, query=query_name,
                          watched_only=watched_only, declared=declared_trials)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        filtered = status or kind or query_name or watched_only
        click.echo("No trials match." if filtered else
                   "No trials yet: `trialwatch watch NCT...` watches one, `trialwatch ingest "
                   "FILE` stores a record file (or try `trialwatch demo`).")
        return
    words: dict[object, str] = {}  # statuses and phases repeat: put each into words once
    header = (f"  {TRIAL_COLUMNS[0]}", *TRIAL_COLUMNS[1:])
    table = [header, *(_trial_cells(row, words) for row in rows)]
    click.echo("\n".join([*_aligned(table), LEGEND]))


def _declared(app: App) -> tuple[Sequence[str], Sequence[Any]]:
    """``[watch]`` trials and queries of the configuration in use. With ``--db`` or
    ``TRIALWATCH_DB`` and no ``--config``, the file is not read (reading never needs it)."""
    from trialwatch.monitor.config.database_url import overriding_database_url

    if app.config_path is None and overriding_database_url(app.db_url, app.env) is not None:
        return (), ()
    return app.config.watch.trials, app.config.watch.queries


def _known_query(session: Any, name: str) -> None:
    from trialwatch.storage import repository as repo

    if repo.saved_query(session, name) is None:
        names = [q.name for q in repo.saved_queries(session)]
        have = f" (saved: {', '.join(names)})" if names else " (none are saved)"
        raise CommandError(f"--query {name}: no saved search by that name{have}")


def _trial_cells(row: dict[str, Any], words: dict[object, str]) -> tuple[str, ...]:
    """One row's cells, the first its mark and NCT ID (``* NCT…`` watched, ``x NCT…``
    removed); ``words`` caches ``humanize`` of the statuses and phases seen."""
    if row["latest_version"] is None:
        status = "not checked yet"
    else:
        status = _in_words(row["status"], words) if row["status"] else "-"
    if row["removed"]:
        status += " (removed)"
    change = row["last_change"]
    mark = "x" if row["removed"] else "*" if row["watched"] else " "
    return (f"{mark} {row['nct_id']}", status,
            _in_words(row["phase"], words) if row["phase"] else "-",
            f"v{row['latest_version']}" if row["latest_version"] else "-",
            f"{change['date']} {change['kind']}" if change else "-",
            shorten(row["title"], TITLE_WIDTH) if row["title"] else "")


def _in_words(value: str | list[str], words: dict[object, str]) -> str:
    key = tuple(value) if isinstance(value, list) else value
    said = words.get(key)
    if said is None:
        said = words[key] = humanize(value)
    return said


def _echo_queries(queries: list[dict[str, Any]]) -> None:
    if not queries:
        click.echo('No saved searches: `trialwatch watch --query "TEXT"` saves one.')
        return
    table = [QUERY_COLUMNS, *((q["name"], q["term"] or "-", q["condition"] or "-",
                               str(q["matches"]), q["last_run"] or "never") for q in queries)]
    click.echo("\n".join(_aligned(table)))


def _aligned(table: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells aligned in columns (the last one unpadded); registry text in a cell
    cannot drive the terminal or break the row: each line goes through ``terminal_line``,
    which puts one character for one, so the columns stay aligned (``--json`` keeps the
    text as it is)."""
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    line = "  ".join([*(f"{{:<{width}}}" for width in widths[:-1]), "{}"])
    return [terminal_line(line.format(*row)).rstrip() for row in table]
