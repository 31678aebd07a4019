"""The dashboard's templates: the Jinja2 environment (autoescaped) and ``render``.

Registry text is never trusted: autoescaping is on and undefined names fail loudly. Links
in templates are made by ``path_for``, relative to the site's root (so the dashboard works
behind a proxy under a path prefix).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from trialwatch.monitor.events import humanize

HERE = Path(__file__).resolve().parent


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["human"] = lambda value: humanize(value) if value is not None else "—"
    env.filters["when"] = _when
    env.filters["phases"] = lambda phases: ", ".join(humanize(p) for p in phases) or "—"
    return env


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        return moment.replace("T", " ").removesuffix("Z")
    return moment.strftime("%Y-%m-%d %H:%M")


def render(request: Request, name: str, context: dict[str, Any],
           status_code: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    root = request.scope.get("root_path", "")

    def path_for(route: str, /, **params: Any) -> str:
        """A site-relative link (works behind a proxy, unlike absolute ``url_for``)."""
        return root + str(request.app.url_path_for(route, **params))

    return templates.TemplateResponse(request, name, {**context, "path_for": path_for},
                                      status_code=status_code)
