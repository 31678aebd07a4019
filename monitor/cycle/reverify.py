"""Rolling re-verification: which watched trials a cycle re-fetches in full, moved or not.

The registry changes some records without moving their ``lastUpdatePostDate``: the
automatic switch to ``UNKNOWN`` of a status unverified for two years, automatically linked
``DERIVED`` references. A status change is caught by the listing itself (it lists
``OverallStatus`` beside the date); everything else by re-fetching every watched trial at
least every ``ctgov.reverify_every`` (default 7 days; 0 turns it off), the least recently
verified first, a budget per cycle:

    budget = ceil(trials × elapsed / reverify_every)      (and at least every overdue one)

``elapsed`` is how far the registry's data moved since the last successful cycle: ages are
counted on the registry's data timeline (``dataTimestamp`` of ``/version``, which moves once
per data load), not the wall clock, since the registry's data only changes with a load.
Every full fetch, re-verification or not, stamps the trial with the load it saw
(``trials.verified_data_at``). Removed trials are in the rotation too: that is the pace at
which trialwatch asks whether the registry serves them again.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, or_, select

from trialwatch.storage.engine import Database
from trialwatch.storage.models import Trial

log = structlog.get_logger(__name__)


def data_stamp(data_timestamp: str | None) -> str | None:
    """A ``dataTimestamp`` as stored (ISO, seconds, UTC, no offset: comparable as text);
    None when it is not a timestamp."""
    moment = _data_time(data_timestamp)
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _data_time(data_timestamp: str | None) -> datetime | None:
    if not data_timestamp:
        return None
    try:
        moment = datetime.fromisoformat(data_timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def budget(trials: int, elapsed: timedelta, period: timedelta) -> int:
    """How many trials one cycle re-verifies so that each is re-fetched every ``period``,
    when the data moved by ``elapsed`` since the last cycle (pure)."""
    if trials <= 0 or period <= timedelta(0) or elapsed <= timedelta(0):
        return 0
    share = min(1.0, elapsed / period)
    return min(trials, math.ceil(trials * share))


def due(db: Database, current: str | None, previous: str | None, period: timedelta, *,
        exclude: Collection[str] = ()) -> list[str]:
    """The watched trials (with a version) this cycle re-verifies, least recently verified
    first: ``budget`` of them, or every overdue one when more are; none of ``exclude``
    (trials the cycle fetches anyway)."""
    now, before = _data_time(current), _data_time(previous)
    if period <= timedelta(0) or now is None:
        return []
    elapsed = now - before if before is not None else timedelta(0)
    cutoff = (now - period).isoformat(timespec="seconds")
    candidates = (Trial.watched.is_(True), Trial.latest_version > 0)
    with db.transaction() as session:
        count = session.scalar(select(func.count(Trial.id)).where(*candidates)) or 0
        overdue = session.scalar(select(func.count(Trial.id)).where(
            *candidates, Trial.verified_data_at.is_not(None),
            Trial.verified_data_at <= cutoff)) or 0
        wanted = max(budget(count, elapsed, period), overdue)
        if not wanted:
            return []
        # Never verified on the data timeline (before the upgrade that added it) first.
        stmt = (select(Trial.nct_id).where(*candidates)
                .where(or_(Trial.verified_data_at.is_(None), Trial.verified_data_at < now
                           .isoformat(timespec="seconds")))
                .order_by(Trial.verified_data_at.asc().nulls_first(), Trial.nct_id)
                .limit(wanted + len(exclude)))
        chosen = [n for n in session.scalars(stmt) if n not in exclude][:wanted]
    log.info("cycle.reverify", trials=len(chosen), overdue=overdue, budget=wanted)
    return chosen
