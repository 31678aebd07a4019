"""``trialwatch serve`` (the read-only dashboard) and ``trialwatch feed`` (Atom to stdout)."""

from __future__ import annotations

import ipaddress
import sys

import click

from trialwatch.monitor.errors import CommandError, UsageProblem
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it needs a token


MIN_TOKEN_LENGTH = 16


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the dashboard, or None: at least 16 characters, not only
    whitespace, every character printable (it travels in a header, a cookie and a URL)."""
    if not token.strip():
        return "the token is only whitespace"
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"the token is too short ({len(token)} characters; at least "
                f"{MIN_TOKEN_LENGTH}, e.g. from `openssl rand -hex 16`)")
    if not token.isprintable():
        return "the token holds control characters"
    if token != token.strip():
        return "the token starts or ends with whitespace"
    return None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="TRIALWATCH_WEB_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' or ?token=TOKEN "
                   "(env TRIALWATCH_WEB_TOKEN).")
@pass_app
def serve(app: App, host: str, port: int, token: str | None) -> None:
    """Serve the read-only web dashboard, Atom feeds and JSON API.

    Pages: / (trials), /trials/NCT..., /changes; feeds under /feeds/, JSON under /api/.

    \b
    Examples:
      trialwatch serve                               http://127.0.0.1:8080/
      TRIALWATCH_WEB_TOKEN=$(openssl rand -hex 16) trialwatch serve --host 0.0.0.0
    """
    token = token or None
    if token is not None and (problem := token_problem(token)):
        raise CommandError(f"--token (or TRIALWATCH_WEB_TOKEN): {problem}")
    if not is_loopback(host) and not token:
        raise CommandError(f"--host {host}: serving beyond this machine needs an access "
                           "token (--token or TRIALWATCH_WEB_TOKEN)")
    import uvicorn

    from trialwatch.monitor.cli.service import next_cycle_function
    from trialwatch.monitor.web import create_app

    db = app.database()
    web = create_app(db, token=token, next_cycle=next_cycle_function(app.config, database=db),
                     channels=app.config.channels)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"trialwatch: serving http://{shown}:{port}/ "
               f"({'token required' if token else 'no token'}; Ctrl-C stops)", err=True)
    # No access log: a ?token= in a logged URL would leak the token.
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False)


@click.command()
@click.argument("nct_id", required=False)
@click.option("--query", "query_name", metavar="NAME", help="Trials matched by a saved query.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Most recent trial versions to include.")
@click.option("--base-url", metavar="URL",
              help="The dashboard's address, for self and entry links (default: entries "
                   "link to ClinicalTrials.gov).")
@pass_app
def feed(app: App, nct_id: str | None, query_name: str | None, limit: int,
         base_url: str | None) -> None:
    """Write an Atom feed of changes to stdout.

    All trials, one trial, or the trials of a saved search.

    \b
    Examples:
      trialwatch feed > changes.atom
      trialwatch feed NCT07328581 > NCT07328581.atom
      trialwatch feed --query lupus-cart > lupus-cart.atom
    """
    from trialwatch.monitor.record import is_valid_nct_id
    from trialwatch.monitor.views import NotFound, changes_feed

    if nct_id is not None and query_name is not None:
        raise UsageProblem("give an NCT ID or --query NAME, not both")
    if nct_id is not None and not is_valid_nct_id(nct_id):
        raise CommandError(f"{nct_id}: not an NCT ID (NCT + 8 digits)")
    db = app.database()
    with db.transaction() as session:
        try:
            body = changes_feed(session, nct_id=nct_id, query=query_name, base_url=base_url,
                                limit=limit)
        except NotFound as exc:
            raise CommandError(str(exc)) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
