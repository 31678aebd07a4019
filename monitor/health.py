"""Alerts about the monitor itself, seen from the cycle: what a finished cycle counts as for
the ``checks`` subject, which channels hear about it, and the health that ``status`` and
``/healthz`` show.

What a cycle counts as (``cycle_failed``):

* ``failed`` (the registry as a whole unreachable or blocked) — a failure;
* ``partial`` where nothing got through (every listing / fetch batch failed; ``covered``
  is 0) — a failure: a cycle that fetched nothing checked nothing;
* ``partial`` that covered some trials, and ``ok`` — a success (a bad record or one failed
  batch is logged and retried next cycle; it is not "the checks are failing");
* ``stopped`` (SIGTERM mid-cycle) — does not count either way.

The rule itself (``failing_after`` in a row → one alert, a success → one "recovered") is
``trialwatch.notifiers.health.decide``; ``record_cycle`` applies it in the transaction that
stores the cycle's outcome, so the flip and its alerts are written with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from trialwatch.monitor.events import SYSTEM_KIND
from trialwatch.notifiers.health import CHECKS, FAILING, Flip, Health, health_rows, observe


@runtime_checkable
class SystemSubscriber(Protocol):
    """A subscription that can say whether it asked for ``system`` alerts."""

    channel: str

    def wants_kind(self, kind: str) -> bool: ...


def system_channels(subscriptions: Iterable[object]) -> tuple[str, ...]:
    """The channels of the subscriptions that list ``system`` in their ``kinds``. System
    alerts have no trial and are "high": trial / query filters and ``min_severity`` do not
    hold them back."""
    return tuple(dict.fromkeys(
        s.channel for s in subscriptions
        if isinstance(s, SystemSubscriber) and s.wants_kind(SYSTEM_KIND)))


def cycle_failed(outcome: str, *, covered: int) -> bool | None:
    """True: a failed cycle; False: a successful one; None: it does not count (stopped)."""
    if outcome == "failed":
        return True
    if outcome == "partial":
        return covered == 0
    if outcome == "ok":
        return False
    return None


def cycle_reason(failures: Sequence[str]) -> str:
    """The failing cycle's reason: its first failure (and how many more there were)."""
    if not failures:
        return "nothing was checked"
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{failures[0]}{more}"


def record_cycle(session: Session, *, outcome: str, covered: int, failures: Sequence[str],
                 started_at: datetime, failing_after: int,
                 channels: Sequence[str]) -> Flip | None:
    """The ``checks`` subject after a finished cycle (in the caller's transaction); a flip
    queues its ``system`` alert to ``channels``."""
    failed = cycle_failed(outcome, covered=covered)
    if failed is None:
        return None
    return observe(session, CHECKS, failed=failed, at=started_at, failing_after=failing_after,
                   reason=cycle_reason(failures) if failed else None, channels=channels)


def health_json(session: Session) -> list[dict[str, Any]]:
    """``status --json``'s ``"health"``: ``[{"subject", "state", "failures", "since",
    "reason"}]``, ``checks`` first (absent until a cycle or a channel first failed)."""
    return [h.to_json() for h in health_rows(session)]


def healthz(rows: Sequence[Health]) -> tuple[bool, list[str]]:
    """(healthy, lines) for ``/healthz``: unhealthy while the checks are failing; a failing
    channel is reported but leaves the monitor healthy (it still checks and stores)."""
    lines = [describe(h.to_json()) for h in rows if h.state == FAILING]
    return not any(h.subject == CHECKS and h.state == FAILING for h in rows), lines


def describe(entry: Mapping[str, Any]) -> str:
    """One subject of ``health_json`` as a line: ``checks failing since T (3 failures):
    reason``, ``channel:x ok (1 failure in a row since T: reason)``, ``checks ok``."""
    failures = int(entry["failures"])
    count = f"{failures} failure{'s' if failures != 1 else ''}"
    if entry["state"] == FAILING:
        return f"{entry['subject']} failing since {entry['since']} ({count}): {entry['reason']}"
    if failures:
        return (f"{entry['subject']} ok ({count} in a row since {entry['since']}: "
                f"{entry['reason']})")
    return f"{entry['subject']} ok" + (f" since {entry['since']}" if entry.get("since") else "")
