"""The dashboard's HTML pages: the trial list, one trial, recent changes.

Each handler reads what it needs in one read-only unit of work and hands plain data to a
template (autoescaped: registry text is never trusted).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from trialwatch.monitor import views
from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import KINDS, iso_utc
from trialwatch.monitor.web.api import (
    database,
    kinds_param,
    nct_id_of,
    positive_number,
    version_param,
)
from trialwatch.monitor.web.compare import side_by_side
from trialwatch.monitor.web.templating import render
from trialwatch.monitor.web.timeline import build_timeline
from trialwatch.storage import repository as repo

PAGE_SIZE = 100
CHANGES_LIMIT = 100


def index(request: Request) -> Response:
    """Known trials (watched, query-matched, ingested): recent high-severity changes first."""
    params = request.query_params
    kinds = kinds_param(request)
    filters = views.TrialFilter(kind=kinds[0] if kinds else None,
                                status=params.get("status") or None,
                                query=params.get("query") or None,
                                text=(params.get("q") or "").strip() or None)
    page = _page_number(params.get("page"))
    with database(request).transaction() as session:
        rows, total = views.trial_summaries(session, filters, limit=PAGE_SIZE,
                                            offset=(page - 1) * PAGE_SIZE)
        statuses = views.known_statuses(session)
        queries = views.query_names(session)
    pages = max(1, -(-total // PAGE_SIZE))
    filtered = any((filters.kind, filters.status, filters.query, filters.text))
    return render(request, "index.html", {
        "rows": rows, "total": total, "page": page, "pages": pages, "filters": filters,
        "filtered": filtered, "statuses": statuses, "queries": queries, "kinds": KINDS,
        "page_query": _without_page(request)})


def trial(request: Request) -> Response:
    """One trial: timeline, every version, events by kind, and a side-by-side diff."""
    nct_id = nct_id_of(request)
    from_version, to_version = version_param(request, "from"), version_param(request, "to")
    with database(request).transaction() as session:
        row = repo.trial(session, nct_id)
        if row is None:
            raise views.NotFound(f"{nct_id}: not in the database (watch or ingest it first)")
        points = views.version_points(session, row)
        events = [views.event_json(nct_id, e) for e in repo.events(session, row)]
        query_names = sorted(repo.query_names_of(session, row))
        comparison = None
        if row.latest_version >= 2 or from_version or to_version:
            _, old_number, new_number = views.version_range(session, nct_id, from_version,
                                                            to_version)
            old, new, new_row = views.stored_records(session, row, old_number, new_number)
            detected = iso_utc(new_row.fetched_at)
            comparison = {
                "from": old_number, "to": new_number,
                "events": sorted((e.at(from_version=old_number, to_version=new_number,
                                       detected_at=detected).to_json()
                                  for e in diff_records(old, new)), key=views.event_order),
                "rows": side_by_side(old, new)}
        latest = points[-1] if points else None
        info = {"nct_id": nct_id, "title": row.title, "status": row.overall_status,
                "watched": row.watched, "removed_at": row.removed_at,
                "latest_version": row.latest_version or None, "url": views.study_url(nct_id),
                "enrollment": latest.enrollment if latest else None,
                "phases": _latest_phases(session, row), "queries": query_names}
    by_version: dict[int | None, int] = {}
    for event in events:
        by_version[event["to_version"]] = by_version.get(event["to_version"], 0) + 1
    return render(request, "trial.html", {
        "trial": info, "points": list(reversed(points)), "timeline": build_timeline(points),
        "groups": _group_by_kind(events), "event_counts": by_version,
        "comparison": comparison, "versions": [p.version for p in points]})


def changes(request: Request) -> Response:
    """Recent changes across trials, newest first, and the outbox's health per channel."""
    kinds = kinds_param(request)
    with database(request).transaction() as session:
        groups = views.recent_changes(session, kinds=kinds, limit=CHANGES_LIMIT)
        outbox = views.outbox_health(session)
    return render(request, "changes.html", {"groups": groups, "outbox": outbox,
                                            "kinds": KINDS, "kind": kinds[0] if kinds else ""})


def _group_by_kind(events: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Events grouped by kind (in vocabulary order), newest version first inside a kind."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["kind"], []).append(event)
    order = {kind: i for i, kind in enumerate(KINDS)}
    return [(kind, sorted(items, key=lambda e: (-(e["to_version"] or 0),
                                                views.event_order(e))))
            for kind, items in sorted(grouped.items(), key=lambda kv: order.get(kv[0], 99))]


def _latest_phases(session: Any, row: Any) -> list[str]:
    latest = repo.latest_version(session, row)
    if latest is None:
        return []
    phases = latest.canonical.get("design", {}).get("phases")
    return [str(p) for p in phases] if isinstance(phases, list) else []


def _page_number(raw: str | None) -> int:
    if raw in (None, ""):
        return 1
    return positive_number("page", raw, "page")


def _without_page(request: Request) -> str:
    """The current filters as a query string, to which page links add ``page=``."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page", "token")]
    from urllib.parse import urlencode

    return urlencode(kept)
