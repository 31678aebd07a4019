"""Alert commands: ``notify test``, ``notify digest`` and the outbox (``outbox list``,
``outbox retry``)."""

from __future__ import annotations

import uuid
from typing import Any

import click

from trialwatch.monitor.cli.help import HelpGroup
from trialwatch.monitor.cli.output import emit_json, say
from trialwatch.monitor.errors import CommandError, UsageProblem
from trialwatch.monitor.service.context import App

pass_app = click.make_pass_decorator(App)


@click.group(cls=HelpGroup)
def notify() -> None:
    """Send a test alert, or the digests that are due."""


@notify.command("test")
@click.argument("channel", required=False)
@pass_app
def notify_test(app: App, channel: str | None) -> None:
    """Send a clearly marked test alert through every channel, or one."""
    from trialwatch.notifiers.base import Alert

    channels = app.channels
    if not channels:
        raise CommandError(f"{app.config_label}: no [channels.*] configured")
    if channel is not None and channel not in channels:
        raise CommandError(f"channel {channel}: not configured (have: {', '.join(channels)})")
    failed = 0
    for name in [channel] if channel else sorted(channels):
        alert = Alert(id=f"msg_test_{uuid.uuid4().hex}", channel=name, nct_id="NCT00000000",
                      title="trialwatch test alert", version=0, events=[], test=True)
        try:
            channels[name].send(alert)
        except Exception as exc:
            failed += 1
            click.echo(f"trialwatch: error: channel {name}: {' '.join(str(exc).split())}",
                       err=True)
        else:
            say(f"{name}: test alert sent ({alert.id})")
    if failed:
        raise click.exceptions.Exit(1)


@notify.command("digest")
@click.argument("channel", required=False)
@click.option("--now", "force", is_flag=True,
              help="Send every digest now, due or not (its period restarts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@pass_app
def notify_digest(app: App, channel: str | None, force: bool, as_json: bool) -> None:
    """Send the digests that are due (for cron).

    Every channel, or one; --now sends them whether due or not."""
    from trialwatch.monitor.digests import digest_subscriptions
    from trialwatch.notifiers.outbox import deliver_due

    channels = app.channels
    if not channels:
        raise CommandError(f"{app.config_label}: no [channels.*] configured")
    if channel is not None and channel not in channels:
        raise CommandError(f"channel {channel}: not configured (have: {', '.join(channels)})")
    if not digest_subscriptions(app.config.effective_subscriptions(), channel):
        where = f"channel {channel}" if channel else app.config_label
        raise CommandError(f"{where}: no [[subscriptions]] with digest "
                           "(add digest = \"daily\", \"weekly\" or a duration)")
    report = app.send_digests(force=force, channel=channel)
    assert report is not None
    names = sorted({o.channel for o in report.outcomes})
    delivery = deliver_due(app.database(), {n: channels[n] for n in names},
                           app.delivery_policy, base_url=app.config.web.base_url)
    rows = [{**o.to_json(), **_row_state(app, o.alert_id)} for o in report.outcomes]
    if as_json:
        emit_json({"digests": rows, "delivery": delivery.to_json()})
    else:
        for row in rows:
            say(_digest_line(row))
    if any(row["status"] not in (None, "delivered") for row in rows):
        raise click.exceptions.Exit(1)


def _row_state(app: App, alert_id: str | None) -> dict[str, str | None]:
    """``status`` and ``last_error`` of a digest's outbox row (None without one)."""
    if alert_id is None:
        return {"status": None, "last_error": None}
    from trialwatch.storage.models import OutboxEntry

    with app.database().transaction() as session:
        row = session.get(OutboxEntry, alert_id)
        return {"status": row.status if row else None,
                "last_error": row.last_error if row else None}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _digest_line(row: dict[str, Any]) -> str:
    channel, state = row["channel"], row["state"]
    if state == "started":
        return f"{channel}: digest started; the first one covers changes from now on"
    if state == "not_due":
        return f"{channel}: digest not due yet (--now sends it anyway)"
    if state == "empty":
        return f"{channel}: no matching changes since the last digest; nothing sent"
    what = f"digest {row['id']}"
    if state == "queued":
        what += f" ({_count(row['events'], 'change')} in {_count(row['trials'], 'trial')})"
    if row["status"] == "delivered":
        return f"{channel}: {what} sent"
    if row["status"] == "dead":
        return f"{channel}: {what} dead: {row['last_error'] or 'gave up'}"
    return f"{channel}: {what} not delivered yet, will retry: {row['last_error'] or 'waiting'}"


@click.group(cls=HelpGroup)
def outbox() -> None:
    """List queued and dead alerts, and retry dead ones."""


@outbox.command("list")
@click.option("--dead", is_flag=True, help="Only alerts that gave up (dead letters).")
@click.option("--all", "show_all", is_flag=True, help="Include delivered alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@pass_app
def outbox_list(app: App, dead: bool, show_all: bool, as_json: bool) -> None:
    """Alerts waiting for delivery (or dead, with --dead)."""
    from sqlalchemy import select

    from trialwatch.monitor.events import iso_utc
    from trialwatch.storage.models import OutboxEntry, Trial

    db = app.database()
    stmt = select(OutboxEntry, Trial.nct_id).outerjoin(Trial, Trial.id == OutboxEntry.trial_id)
    if dead:
        stmt = stmt.where(OutboxEntry.status == "dead")
    elif not show_all:
        stmt = stmt.where(OutboxEntry.status == "pending")
    with db.transaction() as session:
        rows = [{"id": row.id, "channel": row.channel, "kind": row.kind, "nct_id": nct_id,
                 "version": row.version,
                 "status": row.status, "attempts": row.attempts,
                 "next_attempt_at": iso_utc(row.next_attempt_at),
                 "last_error": row.last_error}
                for row, nct_id in session.execute(stmt.order_by(OutboxEntry.created_at))]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("outbox is empty" if not dead else "no dead alerts")
    for r in rows:
        what = f"{r['nct_id']} v{r['version']:<3}" if r["nct_id"] else f"{r['kind']:<15}"
        say(f"{r['id']}  {r['channel']:<12} {what} "
            f"{r['status']:<9} attempts={r['attempts']}  {r['last_error'] or ''}")


@outbox.command("retry")
@click.argument("alert_id", required=False)
@click.option("--all-dead", is_flag=True, help="Retry every dead alert.")
@click.option("--no-deliver", is_flag=True, help="Only requeue; the daemon delivers later.")
@pass_app
def outbox_retry(app: App, alert_id: str | None, all_dead: bool, no_deliver: bool) -> None:
    """Requeue a dead alert (or all of them) and deliver now."""
    from trialwatch.notifiers.outbox import retry_dead

    if bool(alert_id) == all_dead:
        raise UsageProblem("give one alert ID or --all-dead")
    count = retry_dead(app.database(), alert_id)
    if alert_id and not count:
        raise CommandError(f"alert {alert_id}: not in the outbox as dead")
    click.echo(f"requeued {count} alert(s)")
    if not no_deliver:
        report = app.deliver_pending()
        if report is not None:
            click.echo(f"delivered {report.delivered}, retry later {report.retried}, "
                       f"dead {report.dead}")
