"""``trialwatch show``: the canonical record as trialwatch reads it, stored or from files.

``show NCT [--version V]`` reads a stored version (default: the latest); ``show PATH...``
parses files or folders without any database. ``--json`` prints a JSON array, one object
per record: ``{"nct_id", "version" (null for files), "source", "record": {section:
{field: value}}}``; without it, readable sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from trialwatch.monitor.cli.output import emit_json
from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)

# The key that names a list item in the readable output, first found wins.
_ITEM_NAMES = ("text", "measure", "label", "name", "facility", "id", "citation", "pmid")


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--version", "version", type=click.IntRange(min=1),
              help="The stored version to show (default: the latest; with an NCT ID only).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
@pass_app
def show(app: App, targets: tuple[str, ...], version: int | None, as_json: bool) -> None:
    """Show a record as trialwatch reads it, stored or from record files.

    \b
    trialwatch show NCT07328581              the latest stored version
    trialwatch show NCT07328581 --version 1  an older one
    trialwatch show seeds/ study.json        files or folders, no database needed
    """
    from trialwatch.monitor.record import is_valid_nct_id

    stored = len(targets) == 1 and is_valid_nct_id(targets[0]) and not Path(targets[0]).exists()
    if version is not None and not stored:
        raise CommandError("--version: only with one NCT ID (a stored trial), not with files")
    shown = [_stored(app, targets[0], version)] if stored else _from_files(targets)
    if as_json:
        emit_json(shown)
        return
    for n, item in enumerate(shown):
        if n:
            click.echo("")
        for line in render_record(item):
            click.echo(line)


def _stored(app: App, nct_id: str, version: int | None) -> dict[str, Any]:
    from trialwatch.monitor.views import NotFound, stored_version

    with app.database().transaction() as session:
        try:
            return stored_version(session, nct_id, version)
        except NotFound as exc:
            raise CommandError(str(exc)) from None


def _from_files(targets: tuple[str, ...]) -> list[dict[str, Any]]:
    from trialwatch.monitor.record import ParseError
    from trialwatch.monitor.sources.files import iter_record_paths, read_record_file

    shown = []
    paths = list(iter_record_paths(Path(t) for t in targets))
    if not paths:
        raise CommandError(f"{', '.join(targets)}: no record files (.json, .txt) found")
    for path in paths:
        try:
            documents = read_record_file(path)
        except ParseError as exc:
            raise CommandError(f"{path}: {exc}") from None
        for document in documents:
            record = document.record
            shown.append({"nct_id": record.nct_id, "version": None, "source": document.origin,
                          "record": {k: dict(v) for k, v in record.sections.items()}})
    return shown


def render_record(item: Mapping[str, Any]) -> list[str]:
    """Readable sections: ``section`` headings, ``field: value`` lines, one line per item."""
    version = f"  version {item['version']}" if item.get("version") is not None else ""
    lines = [f"{item['nct_id']}{version}  ({item['source']})"]
    for section, fields in item["record"].items():
        lines.append(f"  {section}")
        for name, value in fields.items():
            if isinstance(value, list) and value and isinstance(value[0], Mapping):
                lines.append(f"    {name} ({len(value)}):")
                lines.extend(f"      - {_item_line(entry)}" for entry in value)
            else:
                lines.append(f"    {name}: {_value(value)}")
    return lines


def _item_line(entry: Mapping[str, Any]) -> str:
    name_key = next((k for k in _ITEM_NAMES if entry.get(k)), None)
    rest = "; ".join(f"{k}: {_value(v)}" for k, v in entry.items()
                     if k != name_key and v is not None)
    head = str(entry[name_key]) if name_key else ""
    return f"{head}  [{rest}]" if head and rest else head or rest


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items() if v is not None) or "—"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) if value else "—"
    return " ".join(str(value).split())
