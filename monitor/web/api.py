"""The JSON API (the CLI's ``--json`` shapes, from ``trialwatch.monitor.views``) and the Atom feeds.

Handlers are plain functions: Starlette runs them in its thread pool, so database work
never blocks the event loop. Each request is one read-only unit of work.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from trialwatch.monitor import health, views
from trialwatch.monitor.events import KINDS
from trialwatch.monitor.feeds import ATOM_MEDIA_TYPE
from trialwatch.monitor.record import is_valid_nct_id
from trialwatch.notifiers.health import health_rows
from trialwatch.storage.engine import Database

FEED_LIMIT = 50


def json_response(value: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status_code,
                    media_type="application/json")


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def nct_id_of(request: Request) -> str:
    nct_id = str(request.path_params["nct_id"])
    if not is_valid_nct_id(nct_id):
        raise HTTPException(404, f"{nct_id}: not an NCT ID (NCT + 8 digits)")
    return nct_id


#: The largest version or page number a request may ask for: PostgreSQL's ``integer``
#: (SQLite took up to 2**63 - 1, then failed with an OverflowError: a 500).
MAX_NUMBER = 2**31 - 1


def positive_number(name: str, raw: str, what: str) -> int:
    """``raw`` as 1, 2, ... up to ``MAX_NUMBER``; anything else (``-1``, ``x``, ``²``, 10**30)
    is a 400 naming the parameter."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= MAX_NUMBER:
        raise HTTPException(400, f"{name}={raw[:40]}: expected a {what} number "
                                 f"(1, 2, ... up to {MAX_NUMBER})")
    return int(raw)


def version_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    return positive_number(name, raw, "version")


def kinds_param(request: Request) -> list[str]:
    kinds = [k for k in request.query_params.getlist("kind") if k]
    for kind in kinds:
        if kind not in KINDS:
            raise HTTPException(400, f"kind={kind}: unknown event kind "
                                     f"(one of {', '.join(KINDS)})")
    return kinds


# --- JSON API ------------------------------------------------------------------------------

def trials(request: Request) -> Response:
    """``list --json``."""
    with database(request).transaction() as session:
        return json_response(views.trial_list(session))


def history(request: Request) -> Response:
    """``history NCT --json``; ``?kind=`` (repeatable) filters events like ``--kind``."""
    nct_id, kinds = nct_id_of(request), kinds_param(request)
    with database(request).transaction() as session:
        return json_response(views.trial_history(session, nct_id, kinds))


def diff(request: Request) -> Response:
    """``diff NCT --from V --to V --json`` (default: the last two versions)."""
    nct_id = nct_id_of(request)
    from_version, to_version = version_param(request, "from"), version_param(request, "to")
    with database(request).transaction() as session:
        return json_response(views.stored_diff(session, nct_id, from_version, to_version))


def status(request: Request) -> Response:
    """Watches, last cycle, outbox pending / delivered / dead per channel, schema."""
    with database(request).transaction() as session:
        return json_response(views.service_status(session,
                                                  **request.app.state.status_options))


def healthz(request: Request) -> Response:
    """The monitor's own health as stored (``trialwatch.monitor.health``): ``200 ok``, or
    ``503`` while the checks are failing; each failing subject on a line of its own."""
    with database(request).transaction() as session:
        healthy, lines = health.healthz(health_rows(session))
    first = "ok" if healthy else "checks failing"
    return PlainTextResponse("\n".join([first, *lines]) + "\n",
                             status_code=200 if healthy else 503)


# --- Atom feeds ----------------------------------------------------------------------------

def _feed(request: Request, **scope: str) -> Response:
    with database(request).transaction() as session:
        body = views.changes_feed(session, base_url=str(request.base_url), limit=FEED_LIMIT,
                                  **scope)
    return Response(body, media_type=ATOM_MEDIA_TYPE)


def changes_feed(request: Request) -> Response:
    return _feed(request)


def trial_feed(request: Request) -> Response:
    return _feed(request, nct_id=nct_id_of(request))


def query_feed(request: Request) -> Response:
    return _feed(request, query=str(request.path_params["name"]))
