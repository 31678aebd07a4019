"""A subscription for tests: routes events to one channel without a config file.

It has the shape ``trialwatch.monitor.versioning.Subscription`` asks for (``channel`` +
``matches``);
``kinds=None`` takes every event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EveryEvent:
    """Every event (or every event of ``kinds``) of every trial goes to ``channel``."""

    def __init__(self, channel: str = "test", kinds: tuple[str, ...] | None = None) -> None:
        self.channel = channel
        self.kinds = kinds

    def matches(self, event: Mapping[str, Any], *, nct_id: str, query_names: set[str]) -> bool:
        return self.kinds is None or event["kind"] in self.kinds
