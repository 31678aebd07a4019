"""The read-only web dashboard, Atom feeds and JSON API (``trialwatch serve``).

``create_app(db, token=None)`` returns the Starlette application; ``trialwatch.monitor.cli.web``
runs it with uvicorn.
"""

from __future__ import annotations

from trialwatch.monitor.web.app import create_app

__all__ = ["create_app"]

