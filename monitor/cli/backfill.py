"""``trialwatch backfill NCT...``: import every past registry version, diffed, never alerted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from trialwatch.monitor.cli.output import emit_json, progress, say
from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.service.context import App

if TYPE_CHECKING:
    from trialwatch.monitor.config.settings import CtgovConfig
    from trialwatch.monitor.sources.ctgov.history import HistoryClient

pass_app = click.make_pass_decorator(App)


@click.command()
@click.argument("nct_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON summary on stdout.")
@pass_app
def backfill(app: App, nct_ids: tuple[str, ...], as_json: bool) -> None:
    """Import the past registry versions of trials, with their changes.

    Versions come from the registry's version history (ctgov.history_url in the
    configuration), in order, each stored with its registry version number and posting
    date. The events between them are historical: listed by history and diff, never sent
    as alerts. Running it
    again imports only what is missing (an interrupted run resumes). Versions are numbered
    in registry order: for a trial already watched, its past becomes versions 1..k and its
    stored versions move k up (their events and pending alerts with them, in one
    transaction); a registry version equal to a stored one only gives it its registry
    number, and versions newer than the newest stored one are left to check.

    \b
    Examples:
      trialwatch backfill NCT03934567
      trialwatch history NCT03934567 --kind outcomes     were the outcomes switched?

    Exit status: 0 all imported, 1 some trial failed (one line each on stderr).
    """
    from trialwatch.monitor.backfill import backfill_trial
    from trialwatch.monitor.record import is_valid_nct_id

    bad = [nct_id for nct_id in nct_ids if not is_valid_nct_id(nct_id)]
    if bad:
        raise CommandError(f"{bad[0]}: not an NCT ID (NCT + 8 digits)")
    db = app.database()
    results = []
    with history_client(app.config.ctgov) as client:
        for nct_id in dict.fromkeys(nct_ids):
            results.append(backfill_trial(db, client, nct_id, progress=progress))
    failed = [r for r in results if r.error is not None]
    for result in failed:
        click.echo(f"trialwatch: error: {result.error}", err=True)
    if as_json:
        emit_json({"trials": [r.to_json() for r in results],
                   "requests": sum(r.requests for r in results)})
    else:
        for r in results:
            state = "done" if r.error is None else (
                "interrupted: run again to resume" if r.imported else "failed, nothing stored")
            moved = f", stored versions renumbered +{r.renumbered}" if r.renumbered else ""
            say(f"{r.nct_id}  {r.versions_total} registry versions: {r.imported} "
                f"imported, {r.skipped} skipped, {r.events} historical events{moved}  "
                f"({state})")
    if failed:
        raise click.exceptions.Exit(1)


def history_client(ctgov: CtgovConfig) -> HistoryClient:
    """The history client ``[ctgov]`` configures: its URL, rate limit, timeout and retries."""
    from trialwatch.monitor.sources.ctgov.history import HistoryClient

    return HistoryClient(str(ctgov.history_url).rstrip("/"),
                         requests_per_second=ctgov.requests_per_second,
                         timeout=ctgov.timeout.total_seconds(),
                         max_retries=ctgov.max_retries)
