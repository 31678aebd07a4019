"""Read-model queries shared by the CLI's JSON output, the web dashboard and the Atom feeds.

Every function takes a ``Session`` (the caller owns the transaction) and returns plain data:
the JSON shapes DESIGN.md gives for ``list --json``, ``history --json`` and ``diff --json``,
and the rows the dashboard and feeds show. Nothing here writes.

Errors are ``NotFound`` (no such trial, query or version) and ``BadVersions`` (a range that
cannot be compared); their messages are the one-line texts the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from trialwatch.monitor.events import change_rank, event_json, iso_utc
from trialwatch.monitor.health import health_json
from trialwatch.monitor.record import TrialRecord
from trialwatch.storage import repository as repo
from trialwatch.storage.models import Event, QueryMatch, SavedQuery, Trial, Version
from trialwatch.storage.schema import revision_of

STUDY_URL = "https://clinicaltrials.gov/study/{nct_id}"
#: How far back a high-severity change counts as "recent" on the dashboard.
RECENT_WINDOW = timedelta(days=30)


class NotFound(LookupError):
    """No such trial, saved query or version; the message names it."""


class BadVersions(ValueError):
    """A version range that cannot be compared (``--from`` newer than ``--to``)."""


def study_url(nct_id: str) -> str:
    return STUDY_URL.format(nct_id=nct_id)


def event_order(event: Mapping[str, Any]) -> tuple[int, int, str]:
    """Most severe first, then kind order: how one version's events are listed."""
    return (*change_rank(event.get("kind", "other"), event.get("severity")),
            str(event.get("summary")))


# --- The CLI's JSON shapes -------------------------------------------------------------------

def trial_list(session: Session) -> list[dict[str, Any]]:
    """``list --json`` (and ``/api/trials``): every trial in the database."""
    from trialwatch.monitor.trial_table import trial_rows

    return trial_rows(session)


def trial_history(session: Session, nct_id: str,
                  kinds: Sequence[str] = ()) -> dict[str, Any]:
    """``history --json``: every stored version of a trial and the events between them."""
    trial = repo.trial(session, nct_id)
    if trial is None:
        raise NotFound(f"{nct_id}: not in the database (watch or ingest it first)")
    versions = [{"version": v.version, "fetched_at": iso_utc(v.fetched_at),
                 "source": v.source, "last_update_posted": v.last_update_posted,
                 "content_hash": v.content_hash}
                for v in repo.versions(session, trial)]
    events = [event_json(nct_id, e) for e in repo.events(session, trial, kinds=kinds)]
    return {"nct_id": nct_id, "versions": versions, "events": events}


def version_range(session: Session, nct_id: str, from_version: int | None,
                  to_version: int | None) -> tuple[Trial, int, int]:
    """The trial and the two version numbers to compare (default: the last two)."""
    trial = repo.trial(session, nct_id)
    if trial is None or not trial.latest_version:
        raise NotFound(f"{nct_id}: no stored versions (watch or ingest it first)")
    newest = trial.latest_version
    to_number = to_version or newest
    from_number = from_version or max(1, to_number - 1)
    for number in (from_number, to_number):
        if number > newest:
            raise NotFound(f"{nct_id}: no version {number} (latest is {newest})")
    if from_number > to_number:
        raise BadVersions(f"{nct_id}: --from {from_number} is newer than --to {to_number}")
    return trial, from_number, to_number


def stored_records(session: Session, trial: Trial, from_number: int, to_number: int
                   ) -> tuple[TrialRecord, TrialRecord, Version]:
    """The two stored versions as records, and the newer version's row."""
    old_row = repo.version(session, trial, from_number)
    new_row = repo.version(session, trial, to_number)
    if old_row is None or new_row is None:
        raise NotFound(f"{trial.nct_id}: version {from_number} or {to_number} is missing")
    return (TrialRecord.from_canonical(old_row.canonical),
            TrialRecord.from_canonical(new_row.canonical), new_row)


def stored_diff(session: Session, nct_id: str, from_version: int | None = None,
                to_version: int | None = None) -> dict[str, Any]:
    """``diff --json`` for two stored versions (default: the last two)."""
    trial, from_number, to_number = version_range(session, nct_id, from_version, to_version)
    old, new, new_row = stored_records(session, trial, from_number, to_number)
    detected = iso_utc(new_row.fetched_at)
    events = [e.at(from_version=from_number, to_version=to_number, detected_at=detected).to_json()
              for e in _diff(old, new)]
    return {"nct_id": nct_id, "from_version": from_number, "to_version": to_number,
            "events": events}


def _diff(old: TrialRecord, new: TrialRecord) -> list[Any]:
    from trialwatch.monitor.diff import diff_records  # only a diff needs the diff machinery

    return diff_records(old, new)


def outbox_health(session: Session, channels: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """Per channel (and each of ``channels``, zeros included): alerts pending, delivered and
    dead (dead letters need attention)."""
    return dict(sorted(repo.outbox_counts(session, channels).items()))


def service_status(session: Session, *,
                   next_cycle: Callable[[datetime | None], datetime | None] | None = None,
                   channels: Iterable[str] = ()) -> dict[str, Any]:
    """``status --json``: watches, the last cycle, when the next is due, the outbox per
    channel (every configured one, zeros included), the monitor's own health per subject
    (``trialwatch.monitor.health``), the schema revision.

    ``next_cycle`` answers when the next cycle is due given the last one's start (the
    caller knows the schedule and any running daemon); without it the answer is null.
    """
    cycle = repo.last_cycle(session)
    last_cycle = None if cycle is None else {
        "started_at": iso_utc(cycle.started_at),
        "finished_at": iso_utc(cycle.finished_at) if cycle.finished_at else None,
        "outcome": cycle.outcome, "fetched": cycle.fetched, "changed": cycle.changed,
        "events": cycle.events, "requests": cycle.requests}
    due = next_cycle(cycle.started_at if cycle is not None else None) if next_cycle else None
    if due is not None and due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    revision = revision_of(session.connection())
    watched = session.scalar(select(func.count()).select_from(Trial)
                             .where(Trial.watched.is_(True)))
    queries = session.scalar(select(func.count()).select_from(SavedQuery))
    return {"watched": watched or 0, "queries": queries or 0, "last_cycle": last_cycle,
            "next_cycle": iso_utc(due) if due is not None else None,
            "outbox": outbox_health(session, channels), "health": health_json(session),
            "schema_version": revision}


# --- Dashboard rows ------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialSummary:
    """One row of the dashboard's trial list."""

    nct_id: str
    title: str | None
    status: str | None
    phases: list[str]
    enrollment: int | None
    latest_version: int | None
    watched: bool
    last_change: datetime | None
    recent_high: int  # high-severity events in the recent window
    removed: bool = False  # the registry no longer serves it

    @property
    def url(self) -> str:
        return study_url(self.nct_id)


@dataclass(frozen=True)
class TrialFilter:
    kind: str | None = None
    status: str | None = None
    query: str | None = None  # a saved query's name
    text: str | None = None  # NCT ID or words of the title


def trial_summaries(session: Session, filters: TrialFilter = TrialFilter(), *,
                    now: datetime | None = None, limit: int = 200, offset: int = 0
                    ) -> tuple[list[TrialSummary], int]:
    """Trials for the dashboard, recent high-severity changes first; and how many matched."""
    since = (now or datetime.now(UTC)) - RECENT_WINDOW
    last_change = (select(Event.trial_id, func.max(Event.detected_at).label("at"))
                   .group_by(Event.trial_id).subquery())
    high = (select(Event.trial_id, func.count().label("n"))
            .where(Event.severity == "high", Event.historical.is_(False),
                   Event.detected_at >= since)
            .group_by(Event.trial_id).subquery())
    design = Version.canonical["design"]
    stmt = (select(Trial, design["phases"], design["enrollment"], last_change.c.at,
                   func.coalesce(high.c.n, 0))
            .outerjoin(Version, and_(Version.trial_id == Trial.id,
                                     Version.version == Trial.latest_version))
            .outerjoin(last_change, last_change.c.trial_id == Trial.id)
            .outerjoin(high, high.c.trial_id == Trial.id))
    conditions: list[Any] = []
    if filters.status:
        conditions.append(Trial.overall_status == filters.status)
    if filters.kind:
        conditions.append(Trial.id.in_(select(Event.trial_id).where(Event.kind == filters.kind)))
    if filters.query:
        conditions.append(Trial.id.in_(
            select(QueryMatch.trial_id).join(SavedQuery, SavedQuery.id == QueryMatch.query_id)
            .where(SavedQuery.name == filters.query)))
    if filters.text:
        conditions.append(or_(Trial.nct_id.icontains(filters.text, autoescape=True),
                              Trial.title.icontains(filters.text, autoescape=True)))
    if conditions:
        stmt = stmt.where(*conditions)
    total = session.scalar(select(func.count()).select_from(
        select(Trial.id).where(*conditions).subquery())) or 0
    stmt = stmt.order_by((func.coalesce(high.c.n, 0) > 0).desc(),
                         last_change.c.at.desc().nulls_last(), Trial.nct_id)
    rows = []
    for trial, phases, enrollment, changed_at, recent_high in session.execute(
            stmt.limit(limit).offset(offset)):
        count = enrollment.get("count") if isinstance(enrollment, dict) else None
        rows.append(TrialSummary(
            nct_id=trial.nct_id, title=trial.title, status=trial.overall_status,
            phases=list(phases) if isinstance(phases, list) else [],
            enrollment=count if isinstance(count, int) else None,
            latest_version=trial.latest_version or None, watched=trial.watched,
            last_change=_aware(changed_at), recent_high=int(recent_high),
            removed=trial.removed_at is not None))
    return rows, int(total)


def known_statuses(session: Session) -> list[str]:
    stmt = select(Trial.overall_status).where(Trial.overall_status.is_not(None)).distinct()
    return sorted(s for s in session.scalars(stmt) if s)


def query_names(session: Session) -> list[str]:
    return [q.name for q in repo.saved_queries(session)]


@dataclass(frozen=True)
class VersionPoint:
    """One version of a trial as the timeline and version table show it."""

    version: int
    fetched_at: datetime
    source: str
    last_update_posted: str | None
    content_hash: str
    status: str | None
    enrollment: int | None
    historical: bool


def version_points(session: Session, trial: Trial) -> list[VersionPoint]:
    """Every version with its status and enrollment, without loading whole documents."""
    stmt = (select(Version.version, Version.fetched_at, Version.source,
                   Version.last_update_posted, Version.content_hash,
                   Version.canonical[("status", "overall_status")],
                   Version.canonical[("design", "enrollment")], Version.historical)
            .where(Version.trial_id == trial.id).order_by(Version.version))
    points = []
    for number, fetched, source, posted, digest, status, enrollment, historical in \
            session.execute(stmt):
        count = enrollment.get("count") if isinstance(enrollment, dict) else None
        points.append(VersionPoint(number, _aware(fetched) or fetched, source, posted, digest,
                                   status if isinstance(status, str) else None,
                                   count if isinstance(count, int) else None, bool(historical)))
    return points


# --- Changes grouped by version (the /changes page and the Atom feeds) -----------------------

@dataclass(frozen=True)
class VersionChanges:
    """One trial version's events: one row of /changes, one Atom entry."""

    nct_id: str
    title: str | None
    version: int
    events: list[dict[str, Any]] = field(default_factory=list)
    content_hash: str = ""  # of the version: with ``published``, survives renumbering

    @property
    def updated(self) -> str:
        return max(str(e["detected_at"]) for e in self.events)

    @property
    def published(self) -> str:
        return min(str(e["detected_at"]) for e in self.events)

    @property
    def headline(self) -> str:
        first = str(self.events[0]["summary"]) if self.events else "No changes"
        more = len(self.events) - 1
        return f"{first} (+{more} more)" if more > 0 else first

    @property
    def severity(self) -> str:
        return str(self.events[0]["severity"]) if self.events else "low"

    @property
    def url(self) -> str:
        return study_url(self.nct_id)


def recent_changes(session: Session, *, nct_id: str | None = None, query: str | None = None,
                   kinds: Sequence[str] = (), limit: int = 50,
                   include_historical: bool = False) -> list[VersionChanges]:
    """The newest ``limit`` trial versions that have events, newest first.

    ``query`` restricts to trials a saved query matched; unknown trials or queries raise
    ``NotFound``. Historical events (``backfill``) are left out unless asked for: they
    were never news.
    """
    conditions: list[Any] = [Event.to_version.is_not(None)]
    if not include_historical:
        conditions.append(Event.historical.is_(False))
    if kinds:
        conditions.append(Event.kind.in_(list(kinds)))
    if nct_id is not None:
        trial = repo.trial(session, nct_id)
        if trial is None:
            raise NotFound(f"{nct_id}: not in the database (watch or ingest it first)")
        conditions.append(Event.trial_id == trial.id)
    if query is not None:
        saved = repo.saved_query(session, query)
        if saved is None:
            raise NotFound(f"{query}: no saved query of that name")
        conditions.append(Event.trial_id.in_(
            select(QueryMatch.trial_id).where(QueryMatch.query_id == saved.id)))
    updated = func.max(Event.detected_at).label("updated")
    groups = session.execute(
        select(Event.trial_id, Event.to_version, updated).where(*conditions)
        .group_by(Event.trial_id, Event.to_version)
        .order_by(updated.desc(), Event.trial_id, Event.to_version.desc()).limit(limit)).all()
    if not groups:
        return []
    keys = [(trial_id, version) for trial_id, version, _ in groups]
    stmt = (select(Event, Trial.nct_id, Trial.title, Version.content_hash)
            .join(Trial, Trial.id == Event.trial_id)
            .join(Version, and_(Version.trial_id == Event.trial_id,
                                Version.version == Event.to_version))
            .where(*conditions, or_(*[and_(Event.trial_id == t, Event.to_version == v)
                                      for t, v in keys])))
    found: dict[tuple[int, int], VersionChanges] = {}
    for row, nct, title, content_hash in session.execute(stmt):
        version = row.to_version or 0  # never None: the query excludes it
        entry = found.get((row.trial_id, version))
        if entry is None:
            entry = found[(row.trial_id, version)] = VersionChanges(
                nct, title, version, content_hash=content_hash)
        entry.events.append(event_json(nct, row))
    for entry in found.values():
        entry.events.sort(key=event_order)
    return [found[key] for key in keys if key in found]


def _aware(moment: datetime | str | None) -> datetime | None:
    """Aggregates lose the column type on SQLite: bring them back to aware UTC datetimes."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def changes_feed(session: Session, *, nct_id: str | None = None, query: str | None = None,
                 base_url: str | None = None, limit: int = 50) -> bytes:
    """The Atom feed of recent changes: all trials, one trial, or one saved query's trials.

    With ``base_url`` (the dashboard's address) the feed links to itself and its entries
    open the dashboard's diff of that version; without, entries link to the registry.
    """
    from urllib.parse import quote

    from trialwatch.monitor.feeds import FeedInfo, render_feed

    groups = recent_changes(session, nct_id=nct_id, query=query, limit=limit)
    base = base_url.rstrip("/") if base_url else None
    if nct_id is not None:
        trial = repo.trial(session, nct_id)
        label = f"{nct_id}: {trial.title}" if trial is not None and trial.title else nct_id
        key, title, path, page = (f"trial/{nct_id}", f"trialwatch — {label}",
                                  f"/feeds/trial/{nct_id}.atom", f"/trials/{nct_id}")
    elif query is not None:
        key, title = f"query/{query}", f"trialwatch — trials matched by {query}"
        path, page = f"/feeds/query/{quote(query, safe='')}.atom", f"/?query={quote(query)}"
    else:
        key, title, path, page = ("changes", "trialwatch — recent changes",
                                  "/feeds/changes.atom", "/changes")
    info = FeedInfo(key=key, title=title,
                    subtitle="What changed in ClinicalTrials.gov records, version by version",
                    self_url=f"{base}{path}" if base else None,
                    alternate_url=f"{base}{page}" if base else None)

    def dashboard_link(group: Any) -> str:
        span = f"?from={group.version - 1}&to={group.version}" if group.version > 1 else ""
        return f"{base}/trials/{group.nct_id}{span}#diff"

    return render_feed(info, groups, entry_link=dashboard_link if base else None)


def stored_version(session: Session, nct_id: str, version: int | None = None
                   ) -> dict[str, Any]:
    """``show --json`` of one stored version (default: the latest): the record as stored."""
    trial = repo.trial(session, nct_id)
    if trial is None or not trial.latest_version:
        raise NotFound(f"{nct_id}: no stored versions (watch or ingest it first)")
    number = version or trial.latest_version
    row = repo.version(session, trial, number)
    if row is None:
        raise NotFound(f"{nct_id}: no version {number} (latest is {trial.latest_version})")
    record = TrialRecord.from_canonical(row.canonical)
    return {"nct_id": nct_id, "version": number, "source": row.source,
            "record": {k: dict(v) for k, v in record.sections.items()}}
