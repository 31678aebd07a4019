"""Watch-list commands: ``watch``, ``unwatch`` and ``check`` (one fetch cycle now)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import click

from trialwatch.monitor.cli.output import echo_lines, emit_json, render_events, say, stdout_reserved
from trialwatch.monitor.errors import CommandError, UsageProblem
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)


def _validated_ids(nct_ids: tuple[str, ...]) -> list[str]:
    from trialwatch.monitor.record import is_valid_nct_id

    cleaned = [n.strip().upper() for n in nct_ids]
    for given, nct_id in zip(nct_ids, cleaned, strict=True):
        if not is_valid_nct_id(nct_id):
            raise CommandError(f"{given}: not an NCT ID (expected NCT followed by 8 digits)")
    return list(dict.fromkeys(cleaned))


@click.command()
@click.argument("nct_ids", nargs=-1)
@click.option("--query", "term", help="Save a search by free text (query.term).")
@click.option("--condition", help="Save a search by condition (query.cond).")
@click.option("--name", help="Name of the saved search (default: made from the text).")
@click.option("--offline", is_flag=True, help="Do not ask the registry whether the IDs exist.")
@click.option("--backfill", "with_backfill", is_flag=True,
              help="Also import every past registry version of the trials (see backfill).")
@pass_app
def watch(app: App, nct_ids: tuple[str, ...], term: str | None, condition: str | None,
          name: str | None, offline: bool, with_backfill: bool) -> None:
    """Watch trials, or a saved search whose matches become watched.

    \b
    Examples:
      trialwatch watch NCT07328581 NCT04267848
      trialwatch watch --backfill NCT03934567      with its whole registry history
      trialwatch watch --query "CAR-T" --condition lupus --name lupus-cart
    """
    from trialwatch.monitor.cycle.watchlist import add_query, add_trials

    if not nct_ids and not term and not condition:
        raise UsageProblem("give NCT IDs, --query or --condition")
    ids = _validated_ids(nct_ids)
    db = app.database()
    if ids:
        unknown: list[str] = []
        if not offline:
            unknown, problem = unknown_to_registry(app, ids)
            if problem:
                click.echo(f"trialwatch: warning: could not verify IDs with the registry "
                           f"({problem}); watching them anyway", err=True)
        known = [i for i in ids if i not in unknown]
        added = add_trials(db, known)
        for nct_id in known:
            say(f"watching {nct_id}" + ("" if nct_id in added else " (already watched)"))
        for nct_id in unknown:
            click.echo(f"trialwatch: error: {nct_id}: not known to the registry (404)", err=True)
        if with_backfill and known:
            from trialwatch.monitor.cli.backfill import backfill

            click.get_current_context().invoke(backfill, nct_ids=tuple(known), as_json=False)
        if unknown:
            raise click.exceptions.Exit(1)
    if term or condition:
        query_name = name or _slug(" ".join(p for p in (term, condition) if p))
        if not query_name:
            raise CommandError("--name is needed: the query text gives no usable name")
        created = add_query(db, query_name, term=term, condition=condition)
        said = ", ".join(f'{label} "{value}"' for label, value
                         in (("term", term), ("condition", condition)) if value)
        say(f"saved search {query_name}{'' if created else ' updated'}: {said}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64]


@click.command()
@click.argument("nct_ids", nargs=-1)
@click.option("--query", "query_names", multiple=True, help="Remove a saved search by name.")
@pass_app
def unwatch(app: App, nct_ids: tuple[str, ...], query_names: tuple[str, ...]) -> None:
    """Stop watching trials or saved searches (their history is kept)."""
    from trialwatch.monitor.cycle.watchlist import remove_query, remove_trials

    if not nct_ids and not query_names:
        raise UsageProblem("give NCT IDs or --query NAME")
    ids = _validated_ids(nct_ids)
    db = app.database()
    missing = [q for q in query_names if not remove_query(db, q)]
    if missing:
        raise CommandError(f"query {missing[0]}: no saved search by that name")
    not_watched = remove_trials(db, ids)
    for nct_id in ids:
        say(f"{nct_id}: " + ("was not watched" if nct_id in not_watched
                             else "no longer watched (history kept)"))
    for query_name in query_names:
        click.echo(f"query {query_name}: removed (its trials stay watched)")


@click.command()
@click.argument("nct_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON summary on stdout.")
@click.option("--no-notify", is_flag=True, help="Store only; do not deliver pending alerts.")
@pass_app
def check(app: App, nct_ids: tuple[str, ...], as_json: bool, no_notify: bool) -> None:
    """Run one fetch cycle now (every watched trial, or those given)."""
    from trialwatch.monitor.cycle.run import run_cycle
    from trialwatch.monitor.cycle.watchlist import ensure_trials, sync_declared_watches

    ids = _validated_ids(nct_ids)
    db = app.database()
    channels = app.channels if not no_notify else {}
    sync_declared_watches(db, app.config)
    if ids:
        ensure_trials(db, ids)
    with app.registry_client() as client:
        report = run_cycle(db, client, subscriptions=app.subscriptions, only=ids or None,
                           reverify_every=app.config.ctgov.reverify_every,
                           failing_after=app.config.alerts.failing_after)
    if channels:
        with stdout_reserved(as_json):
            app.deliver_pending()
    for failure in report.failures:
        click.echo(f"trialwatch: error: {failure}", err=True)
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(f"cycle {report.outcome}: {report.watched} trials, {report.fetched} fetched, "
                   f"{report.changed} changed, {len(report.events)} events, "
                   f"{report.requests} requests")
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for event in report.events:
            by_trial.setdefault(event.nct_id, []).append(event.to_json())
        for nct_id, events in sorted(by_trial.items()):
            say(nct_id)
            echo_lines(render_events(events))
    if report.failures:
        raise click.exceptions.Exit(1)


def unknown_to_registry(app: App, nct_ids: Sequence[str]) -> tuple[list[str], str | None]:
    """IDs the registry does not list, and the problem if it could not be asked."""
    from trialwatch.monitor.sources.ctgov.client import RegistryError

    try:
        with app.registry_client() as client:
            listed: set[str] = set()
            for stamp in client.iter_stamps(list(nct_ids)):
                listed.add(stamp.nct_id)
                listed.update(stamp.aliases)
    except RegistryError as exc:
        return [], str(exc)
    return [n for n in nct_ids if n not in listed], None
