"""Record commands: ``ingest`` files, ``diff`` versions or files, ``history``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trialwatch.monitor.cli.output import (
    echo_lines,
    emit_json,
    progress,
    render_events,
    say,
    stdout_reserved,
)
from trialwatch.monitor.errors import CommandError, UsageProblem
from trialwatch.monitor.events import KINDS
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON summary on stdout.")
@click.option("--no-notify", is_flag=True, help="Store only; do not deliver pending alerts.")
@pass_app
def ingest(app: App, paths: tuple[Path, ...], as_json: bool, no_notify: bool) -> None:
    """Store record files or folders as versions and their changes.

    A file is API v2 JSON (a study or a list page) or a rendered text page.

    Each file is one transaction: a bad file is reported (one line naming it) and skipped,
    and the good ones are stored. A folder's files are read in name order.

    \b
    Examples:
      trialwatch ingest seeds/NCT07328581.txt
      trialwatch ingest exports/ --json

    Exit status: 0 all stored, 1 some file failed, 2 error.
    """
    from trialwatch.monitor.record import ParseError
    from trialwatch.monitor.sources.files import iter_record_paths, read_record_file
    from trialwatch.monitor.versioning import Observation, RecordOutcome, record_observation

    db = app.database()
    subscriptions = app.subscriptions
    errors: list[str] = []
    files: list[Path] = []
    for path in paths:
        try:
            files.extend(iter_record_paths([path]))
        except ParseError as exc:
            errors.append(f"{path}: {exc}")
    outcomes: list[RecordOutcome] = []
    with progress(files, "Ingesting") as items:
        for path in items:
            try:
                documents = read_record_file(path)
            except ParseError as exc:
                errors.append(f"{path}: {exc}")
                continue
            with db.transaction() as session:
                for document in documents:
                    observation = Observation(record=document.record, raw=document.raw,
                                              raw_format=document.format,
                                              source=f"file:{path.resolve()}")
                    outcomes.append(record_observation(session, observation,
                                                       subscriptions=subscriptions))
    for message in errors:
        click.echo(f"trialwatch: error: {message}", err=True)
    if not no_notify:
        with stdout_reserved(as_json):
            app.deliver_pending()
    events = [e.to_json() for outcome in outcomes for e in outcome.events]
    if as_json:
        emit_json({"records": [o.to_json() for o in outcomes], "events": events})
    else:
        for outcome in outcomes:
            state = "new version" if outcome.changed else "unchanged"
            say(f"{outcome.nct_id}  version {outcome.version}  {state}")
            if outcome.events:
                echo_lines(render_events([e.to_json() for e in outcome.events]))
    if errors:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("first")
@click.argument("second", required=False)
@click.option("--from", "from_version", type=click.IntRange(min=1), help="Older version.")
@click.option("--to", "to_version", type=click.IntRange(min=1), help="Newer version.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON diff on stdout.")
@pass_app
def diff(app: App, first: str, second: str | None, from_version: int | None,
         to_version: int | None, as_json: bool) -> None:
    """Compare two stored versions of a trial, or two record files.

    Of stored versions, the last two unless --from/--to say which. The most severe changes
    are listed first.

    \b
    Examples:
      trialwatch diff NCT07328581                 last two stored versions
      trialwatch diff NCT07328581 --from 1 --to 3
      trialwatch diff old.json new.txt            two files, no database

    Exit status: 0 equal, 1 different, 2 error (like diff(1)).
    """
    from trialwatch.monitor.record import is_valid_nct_id

    if second is not None:
        if from_version or to_version:
            raise UsageProblem("--from/--to apply to stored versions, not to two files")
        result = _diff_files(Path(first), Path(second))
    elif is_valid_nct_id(first):
        result = _diff_stored(app, first, from_version, to_version)
    elif Path(first).exists():
        raise CommandError(f"{first}: give two files to compare, or an NCT ID")
    else:
        raise CommandError(f"{first}: not an NCT ID (NCT + 8 digits) and not a file")
    if as_json:
        emit_json(result)
    else:
        span = (f"v{result['from_version']} → v{result['to_version']}"
                if result["from_version"] is not None else f"{first} → {second}")
        say(f"{result['nct_id']}  {span}  ({len(result['events'])} changes)")
        echo_lines(render_events(result["events"]))
    raise click.exceptions.Exit(1 if result["events"] else 0)


def _diff_files(path_a: Path, path_b: Path) -> dict[str, Any]:
    from trialwatch.monitor.diff import diff_records
    from trialwatch.monitor.record import ParseError, TrialRecord
    from trialwatch.monitor.sources.files import read_record_file

    records: list[TrialRecord] = []
    for path in (path_a, path_b):
        try:
            documents = read_record_file(path)
        except ParseError as exc:
            raise CommandError(f"{path}: {exc}") from None
        if len(documents) != 1:
            raise CommandError(f"{path}: holds {len(documents)} records; diff needs exactly one")
        records.append(documents[0].record)
    old, new = records
    if old.nct_id != new.nct_id:
        raise CommandError(f"{path_a} is {old.nct_id} but {path_b} is {new.nct_id}: "
                           "diff compares two versions of one trial")
    events = [e.to_json() for e in diff_records(old, new)]
    return {"nct_id": new.nct_id, "from_version": None, "to_version": None, "events": events}


def _diff_stored(app: App, nct_id: str, from_version: int | None,
                 to_version: int | None) -> dict[str, Any]:
    from trialwatch.monitor.views import BadVersions, NotFound, stored_diff

    db = app.database()
    with db.transaction() as session:
        try:
            return stored_diff(session, nct_id, from_version, to_version)
        except (NotFound, BadVersions) as exc:
            raise CommandError(str(exc)) from None


@click.command()
@click.argument("nct_id")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable): " + ", ".join(KINDS) + ".")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON history on stdout.")
@pass_app
def history(app: App, nct_id: str, kinds: tuple[str, ...], as_json: bool) -> None:
    """Show a trial's stored versions and the changes between them."""
    from trialwatch.monitor.record import is_valid_nct_id
    from trialwatch.monitor.views import NotFound, trial_history

    if not is_valid_nct_id(nct_id):
        raise CommandError(f"{nct_id}: not an NCT ID (NCT + 8 digits)")
    for kind in kinds:
        if kind not in KINDS:
            raise CommandError(f"--kind {kind}: unknown event kind (one of {', '.join(KINDS)})")
    db = app.database()
    with db.transaction() as session:
        try:
            result = trial_history(session, nct_id, kinds)
        except NotFound as exc:
            raise CommandError(str(exc)) from None
    versions, events = result["versions"], result["events"]
    if as_json:
        emit_json({"nct_id": nct_id, "versions": versions, "events": events})
        return
    say(f"{nct_id}  {len(versions)} versions, {len(events)} events")
    for v in versions:
        say(f"v{v['version']:<4} {v['fetched_at']}  "
            f"posted {v['last_update_posted'] or '?':<10}  {v['source']}")
        between = [e for e in events if e["to_version"] == v["version"]]
        if between:
            echo_lines(render_events(between, indent="      "))


def __getattr__(name: str) -> Any:
    """``event_json`` moved to ``trialwatch.monitor.views``; still importable from here, lazily."""
    if name == "event_json":
        from trialwatch.monitor.views import event_json

        return event_json
    raise AttributeError(name)
