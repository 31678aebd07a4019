"""A sample change event and alert, as the outbox hands them to notifiers (for notifier tests)."""

from __future__ import annotations

from typing import Any

from trialwatch.notifiers.base import Alert

STATUS_EVENT: dict[str, Any] = {
    "nct_id": "NCT07328581",
    "kind": "status",
    "field": "overall_status",
    "old": "NOT_YET_RECRUITING",
    "new": "RECRUITING",
    "severity": "high",
    "from_version": 1,
    "to_version": 2,
    "detected_at": "2026-11-25T12:00:00Z",
    "summary": "Recruitment status: Not yet recruiting → Recruiting",
}


def sample_alert(**overrides: Any) -> Alert:
    """Version 2 of the seed trial with its status event; override any field."""
    values: dict[str, Any] = {
        "id": "alert-0001",
        "channel": "team-mail",
        "nct_id": "NCT07328581",
        "title": "CAR-T Cell Therapy for Refractory Lupus",
        "version": 2,
        "events": [STATUS_EVENT],
    }
    values.update(overrides)
    return Alert(**values)
