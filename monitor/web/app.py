"""The dashboard's Starlette application: routes, guards, templates and error pages.

``create_app(db, token=...)`` builds it over an open database. Guards, outermost first:

* an optional access token (``Authorization: Bearer TOKEN``, ``?token=TOKEN`` — then kept
  in an HttpOnly, SameSite=Strict cookie so the pages' own links work — or that cookie);
* read-only: every method but GET and HEAD is refused with 405;
* no 500 a client can cause: a path or query holding control characters (``%00``, which
  PostgreSQL cannot store in a string) is a 400; an unexpected error in a route answers a
  clean 500 page and logs one line (``web.error``), never a traceback per request;
* security headers on every answer: a Content-Security-Policy without scripts, no
  framing, ``Referrer-Policy: no-referrer`` (so a ``?token=`` never leaks through links).

Templates are Jinja2 with autoescaping on: registry text (titles, criteria, summaries) is
always escaped. Errors are clean pages, or JSON under ``/api/``; never a traceback.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trialwatch.monitor.views import BadVersions, NotFound
from trialwatch.monitor.web.templating import render, template_environment
from trialwatch.storage.engine import Database

HERE = Path(__file__).resolve().parent
TOKEN_COOKIE = "trialwatch_token"
READ_METHODS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def create_app(db: Database, *, token: str | None = None,
               next_cycle: Callable[[datetime | None], datetime | None] | None = None,
               channels: Iterable[str] = ()) -> Starlette:
    """The read-only dashboard, feeds and JSON API over ``db``. ``next_cycle`` and
    ``channels`` complete ``/api/status`` as ``trialwatch status`` has it (the schedule and
    the configured channels are the configuration's, not the database's)."""
    from trialwatch.monitor.web import api, pages

    routes = [
        Route("/", pages.index, name="index"),
        Route("/trials/{nct_id}", pages.trial, name="trial"),
        Route("/changes", pages.changes, name="changes"),
        Route("/feeds/changes.atom", api.changes_feed, name="feed_changes"),
        Route("/feeds/trial/{nct_id}.atom", api.trial_feed, name="feed_trial"),
        Route("/feeds/query/{name}.atom", api.query_feed, name="feed_query"),
        Route("/api/trials", api.trials, name="api_trials"),
        Route("/api/trials/{nct_id}/history", api.history, name="api_history"),
        Route("/api/trials/{nct_id}/diff", api.diff, name="api_diff"),
        Route("/api/status", api.status, name="api_status"),
        Route("/healthz", api.healthz, name="healthz"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, NotFound: _not_found, BadVersions: _bad_request})
    app.state.db = db
    app.state.status_options = {"next_cycle": next_cycle, "channels": tuple(channels)}
    app.state.templates = Jinja2Templates(env=template_environment())
    app.add_middleware(OneLineErrors)  # innermost: route errors, after the handlers above
    app.add_middleware(ReadOnly)
    if token:
        app.add_middleware(TokenGate, token=token)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so on every answer
    return app


# --- Errors --------------------------------------------------------------------------------

def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    if request.url.path.startswith(("/feeds/", "/static/")):
        return PlainTextResponse(f"{status}: {message}\n", status_code=status)
    return render(request, "error.html", {"status": status, "message": message},
                  status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such page", 405: "method not allowed"}.get(exc.status_code,
                                                                    exc.detail)
    response = _error(request, exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc))


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


# --- Guards (plain ASGI middleware) --------------------------------------------------------

class OneLineErrors:
    """A bad request's text is a 400; an unexpected error is a 500 page and one log line.

    Starlette's own catch-all re-raises after answering, so the server logged an 80-line
    traceback per request, which anyone could use to flood the log; this one does not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_controls(scope):
            await _error(Request(scope), 400, "control characters in the address")(
                scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            import structlog

            structlog.get_logger("trialwatch.web").error(
                "web.error", path=_printable(scope.get("path", "")),
                error_type=type(exc).__name__, error=_printable(str(exc))[:300])
            if not started:
                response = _error(Request(scope), 500, "internal error (see the server's log)")
                await response(scope, receive, send)


def _has_controls(scope: Scope) -> bool:
    from urllib.parse import unquote

    texts = (str(scope.get("path", "")), unquote(bytes(scope.get("query_string", b"")).decode(
        "latin-1")))
    return any(ord(c) < 32 or ord(c) == 127 for text in texts for c in text)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


class ReadOnly:
    """Only GET and HEAD: this dashboard never changes anything."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in READ_METHODS:
            body = (b'{"error": "read-only: only GET and HEAD", "status": 405}'
                    if scope["path"].startswith("/api/") else b"405: read-only dashboard\n")
            media = b"application/json" if body.startswith(b"{") else b"text/plain"
            await send({"type": "http.response.start", "status": 405, "headers": [
                (b"allow", b"GET, HEAD"), (b"content-type", media),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TokenGate:
    """Every request but static files needs the token; a wrong one is a 401.

    Any printable token works in each of its three places: ``?token=`` percent-encoded as
    UTF-8, ``Authorization: Bearer`` as the raw UTF-8 bytes (headers arrive as Latin-1
    text, so they are compared as bytes), and the cookie, which holds it percent-encoded
    (a cookie value cannot hold ``€``, a space or a quote)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        from_cookie = request.cookies.get(TOKEN_COOKIE, "")
        offered: Sequence[bytes] = [
            _header_bytes(header[7:].strip()) if header[:7].lower() == "bearer " else b"",
            request.query_params.get("token", "").encode(),
            unquote_to_bytes(from_cookie),
        ]
        if not any(self._valid(value) for value in offered):
            response = _unauthorized(scope["path"])
            await response(scope, receive, send)
            return
        if not self._valid(offered[2]) and self._valid(offered[1]):
            await self.app(scope, receive, self._remember(send))
            return
        await self.app(scope, receive, send)

    def _valid(self, value: bytes) -> bool:
        return bool(value) and hmac.compare_digest(value, self.token)

    def _remember(self, send: Send) -> Send:
        value = (f"{TOKEN_COOKIE}={quote_from_bytes(self.token, safe='')}; HttpOnly; Path=/; "
                 "SameSite=Strict").encode("ascii")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", value)]
            await send(message)

        return send_with_cookie


def _header_bytes(value: str) -> bytes:
    """A header as the bytes the client sent (the server decoded them as Latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def _unauthorized(path: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="trialwatch"'}
    message = "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN"
    if path.startswith("/api/"):
        return JSONResponse({"error": message, "status": 401}, status_code=401,
                            headers=headers)
    return PlainTextResponse(f"401: {message}\n", status_code=401, headers=headers)
