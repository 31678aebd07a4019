"""``trialwatch demo``: what trialwatch is for, in one offline command on the shipped seed.

The seed (``seeds/NCT07328581.txt``, not yet recruiting) and two later versions of it built
for the demo (``seeds/demo/``: recruiting; completed with results) are stored in order as
``ingest`` would store them, each version is diffed against the one before, and the alerts
are delivered through the real outbox to a console channel subscribed to every kind. The
output ends with the commands that look further into what was stored.

Unless ``--db`` or ``TRIALWATCH_DB`` names a database, the demo keeps its own SQLite file,
``demo.db`` beside the default database, made afresh on every run: it never mixes made-up
versions into the trials you watch. A database named explicitly must not hold the seed's
trial yet.
"""

from __future__ import annotations

from pathlib import Path

import click

from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)

SEED_NCT_ID = "NCT07328581"
DEMO_CHANNEL = "console"


def seed_folder() -> Path | None:
    """``seeds/`` of this checkout (an editable install), else ``./seeds``; None if neither."""
    for folder in (Path(__file__).resolve().parents[2] / "seeds", Path.cwd() / "seeds"):
        if (folder / f"{SEED_NCT_ID}.txt").is_file() and (folder / "demo").is_dir():
            return folder
    return None


def demo_files(folder: Path) -> list[Path]:
    """The seed first, then its later versions in the order their names give."""
    later = sorted(p for p in (folder / "demo").iterdir()
                   if p.name.startswith(SEED_NCT_ID) and p.suffix == ".txt")
    return [folder / f"{SEED_NCT_ID}.txt", *later]


def demo_database_path() -> Path:
    """``demo.db`` in the user data directory, beside the default ``trialwatch.db``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("trialwatch")) / "demo.db"


def shown_path(path: Path) -> str:
    """A path as a person would type it: relative to here, or ``~/...``, or absolute."""
    absolute = path.resolve()
    for base, prefix in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        if absolute.is_relative_to(base) and absolute != base:
            return prefix + str(absolute.relative_to(base))
    return str(absolute)


@click.command()
@pass_app
def demo(app: App) -> None:
    """Show what trialwatch does, offline, on the shipped seed trial.

    Stores the seed and two later versions of it (recruiting; completed with results),
    prints the changes as a console alert would, and ends with the commands that look
    further. Unless --db or TRIALWATCH_DB names one, it uses its own database, demo.db
    beside the default one, made afresh on every run.
    """
    from trialwatch.monitor.config.database_url import overriding_database_url

    folder = seed_folder()
    if folder is None:
        raise CommandError("demo: cannot find seeds/NCT07328581.txt and seeds/demo/ (run it "
                           "from a trialwatch checkout)")
    override = overriding_database_url(app.db_url, app.env)
    if override is None:
        path = demo_database_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")):
            leftover.unlink(missing_ok=True)
        app = App(db_url=str(path), env=app.env, log_format=app.log_format)
        db_option = f"--db {shown_path(path)} "
        where = f"{shown_path(path)}\n(the demo's own database, made afresh on every run)"
    else:
        origin, value = override
        db_option = f"--db {value} " if origin == "--db" else ""
        where = f"{app.database().url}"
    try:
        _run(app, demo_files(folder), where, db_option)
    finally:
        if override is None:
            app.close()


def _run(app: App, files: list[Path], where: str, db_option: str) -> None:
    from trialwatch.monitor.config.subscriptions import Subscription
    from trialwatch.monitor.record import ParseError
    from trialwatch.monitor.sources.files import read_record_file
    from trialwatch.monitor.versioning import Observation, record_observation
    from trialwatch.notifiers.console import ConsoleConfig, ConsoleNotifier
    from trialwatch.notifiers.outbox import deliver_due
    from trialwatch.storage import repository as repo

    db = app.database()
    with db.transaction() as session:
        if repo.trial(session, SEED_NCT_ID) is not None:
            raise CommandError(f"database {db.url}: already holds {SEED_NCT_ID}; the demo "
                               "needs a database without it (or run it without --db and "
                               "TRIALWATCH_DB to use its own)")
    subscriptions = [Subscription(channel=DEMO_CHANNEL, kinds=("all",))]
    click.echo(f"Storing {len(files)} versions of {SEED_NCT_ID} in {where}:")
    width = max(len(shown_path(p)) for p in files)
    for path in files:
        try:
            (document,) = read_record_file(path)
        except (ParseError, ValueError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        with db.transaction() as session:
            outcome = record_observation(
                session, Observation(record=document.record, raw=document.raw,
                                     raw_format=document.format,
                                     source=f"file:{path.resolve()}"),
                subscriptions=subscriptions)
        said = (f"{len(outcome.events)} changes" if outcome.events
                else "the first version: nothing to compare it with yet")
        click.echo(f"  version {outcome.version}  {shown_path(path):<{width}}  {said}")
    click.echo("")
    click.echo("The alerts, as a console channel prints them (the demo subscribes it to every")
    click.echo("kind of change; by default only status and results notify):")
    click.echo("")
    console = ConsoleNotifier(ConsoleConfig(), app.env)
    deliver_due(db, {DEMO_CHANNEL: console})
    prefix = f"trialwatch {db_option}"
    click.echo("Look further into what was stored:")
    click.echo(f"  {prefix}diff {SEED_NCT_ID} --from 1 --to 3")
    click.echo(f"  {prefix}history {SEED_NCT_ID}")
    click.echo(f"  {prefix}serve     (then open http://127.0.0.1:8080/)")
