"""``trialwatch export events|trials|versions``: what is stored, for spreadsheets and analysis.

Rows are written as they are read (``trialwatch.storage.exports``), so memory stays flat
however many there are. Formats:

Events carry ``days`` (a ``dates`` event) or ``percent`` (``enrollment``) after ``new``, the
deltas threshold rules read, as ``history --json`` shows them (empty CSV cells otherwise).

* ``csv`` (default): a header row, then one line per row; values that are not plain (lists,
  tables: an event's ``old``/``new``, a version's record) are JSON text, times ISO-8601 UTC
  with ``Z``, booleans ``true``/``false``, nothing is an empty cell.
* ``ndjson``: one JSON object per line.
* ``json``: one JSON array of those objects.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

import click
import orjson

from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.events import iso_utc
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)
TABLES = ("events", "trials", "versions")


def parse_since(value: str) -> datetime:
    """``2026-11-25`` (midnight UTC) or an ISO-8601 time (no offset: UTC)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--since {value}: not a date (use YYYY-MM-DD or an ISO-8601 time "
                           "such as 2026-11-25T12:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"cannot export a {type(value).__name__}")


def _json_bytes(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def csv_cell(value: Any) -> str:
    """One CSV cell: plain values as text, everything else as JSON text (pure)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, str | int | float):
        return str(value)
    return orjson.dumps(value, default=_json_default).decode()


def write_csv(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for count, row in enumerate(rows, start=1):  # noqa: B007 - the count is returned
        writer.writerow([csv_cell(row.get(name)) for name in columns])
    return count


def write_ndjson(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], out: IO[str]) -> int:
    count = 0
    for count, row in enumerate(rows, start=1):  # noqa: B007
        out.write(_json_bytes(row).decode())
        out.write("\n")
    return count


def write_json(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], out: IO[str]) -> int:
    out.write("[")
    count = 0
    for count, row in enumerate(rows, start=1):
        out.write(",\n" if count > 1 else "\n")
        out.write(_json_bytes(row).decode())
    out.write("\n]\n" if count else "]\n")
    return count


#: Event measures (``trialwatch.monitor.events.measures``): the threshold rules' deltas.
MEASURES = ("days", "percent")


def with_measures(row: dict[str, Any]) -> dict[str, Any]:
    """An event row with ``days`` (dates) or ``percent`` (enrollment) after ``new``, as
    ``history --json`` and alerts carry them (pure)."""
    from trialwatch.monitor.events import measures

    extra = measures(row["kind"], row["old"], row["new"])
    if not extra:
        return row
    items = list(row.items())
    at = [name for name, _ in items].index("new") + 1
    return dict(items[:at] + list(extra.items()) + items[at:])


def event_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    at = columns.index("new") + 1
    return columns[:at] + MEASURES + columns[at:]


WRITERS: dict[str, Callable[[Iterable[dict[str, Any]], tuple[str, ...], IO[str]], int]] = {
    "csv": write_csv, "ndjson": write_ndjson, "json": write_json}


@click.command()
@click.argument("table", type=click.Choice(TABLES))
@click.option("--format", "output_format", type=click.Choice(tuple(WRITERS)), default="csv",
              show_default=True, help="CSV with a header row, JSON lines, or one JSON array.")
@click.option("--since", metavar="DATE",
              help="Events detected, versions fetched, trials with a version fetched at or "
                   "after DATE (YYYY-MM-DD or ISO-8601, UTC).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable; events only).")
@click.option("--trial", "nct_ids", multiple=True, metavar="NCT",
              help="Only this trial (repeatable).")
@click.option("--with-records", is_flag=True,
              help="versions: add each version's canonical record as JSON (column record).")
@pass_app
def export(app: App, table: str, output_format: str, since: str | None,
           kinds: tuple[str, ...], nct_ids: tuple[str, ...], with_records: bool) -> None:
    """Write stored events, trials or versions as CSV or JSON.

    CSV has a header row; --format ndjson writes one JSON object per line, --format json
    one array. Rows stream as they are read: memory stays flat for any number of rows.

    \b
      trialwatch export events > events.csv
      trialwatch export events --kind outcomes --since 2026-01-01 --format ndjson
      trialwatch export versions --trial NCT07328581 --with-records --format json
    """
    from trialwatch.monitor.events import KINDS
    from trialwatch.monitor.record import is_valid_nct_id
    from trialwatch.storage.exports import ExportFilter, columns_of, export_rows

    if kinds and table != "events":
        raise CommandError(f"--kind selects events; it does not apply to {table}")
    if with_records and table != "versions":
        raise CommandError(f"--with-records applies to versions, not to {table}")
    for kind in kinds:
        if kind not in KINDS:
            raise CommandError(f"--kind {kind}: unknown event kind (one of {', '.join(KINDS)})")
    nct_ids = tuple(nct_id.upper() for nct_id in nct_ids)
    for nct_id in nct_ids:
        if not is_valid_nct_id(nct_id):
            raise CommandError(f"--trial {nct_id}: not an NCT ID (NCT + 8 digits)")
    filters = ExportFilter(since=parse_since(since) if since is not None else None,
                           kinds=kinds, nct_ids=nct_ids)
    db = app.database()
    rows: Iterator[dict[str, Any]] = export_rows(db, table, filters, with_records=with_records)
    columns = columns_of(table, with_records=with_records)
    if table == "events":
        rows, columns = (with_measures(row) for row in rows), event_columns(columns)
    try:
        WRITERS[output_format](rows, columns, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `export ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise click.exceptions.Exit(0) from None
