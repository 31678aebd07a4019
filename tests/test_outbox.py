"""Alerts end to end: stored events → outbox → real SMTP server and real webhook receiver."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from docmaker import recruiting_copy
from receivers import Mailbox, WebhookReceiver, smtp_mailbox
from standardwebhooks import Webhook

from trialwatch.monitor.cli import cli
from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import open_database

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
ENV = {"HOOK_SECRET": SECRET}


def write_config(tmp_path: Path, mailbox: Mailbox | None, hook: WebhookReceiver | None,
                 *, kinds: list[str] | None = None, max_attempts: int = 8) -> Path:
    parts = [f"[database]\nurl = \"sqlite:///{tmp_path / 'tw.db'}\"\n",
             f"[delivery]\nmax_attempts = {max_attempts}\nbackoff = \"1s\"\n"]
    if mailbox is not None:
        parts.append(textwrap.dedent(f"""
            [channels.team-mail]
            type = "email"
            host = "127.0.0.1"
            port = {mailbox.port}
            security = "none"
            from = "trialwatch <alerts@example.org>"
            to = ["team@example.org"]
            """))
    if hook is not None:
        parts.append(textwrap.dedent(f"""
            [channels.ops-hook]
            type = "webhook"
            url = "{hook.url}"
            secret_env = "HOOK_SECRET"
            """))
    if kinds is not None:
        channel = "ops-hook" if hook is not None else "team-mail"
        parts.append(f"[[subscriptions]]\nchannel = \"{channel}\"\nkinds = {json.dumps(kinds)}\n")
    path = tmp_path / "trialwatch.toml"
    path.write_text("\n".join(parts))
    path.chmod(0o600)
    return path


def trialwatch(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], env=ENV)
    return result


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_mailbox() as box:
        yield box


def ingest_status_change(config: Path, tmp_path: Path, *, title: str | None = None) -> None:
    for path in (SEED, CONSTRUCTED, recruiting_copy(tmp_path, title=title)):
        result = trialwatch(config, "ingest", str(path))
        assert result.exit_code == 0, result.output


def test_one_status_change_sends_exactly_one_email_and_one_signed_webhook(
        tmp_path, mailbox, hook):
    config = write_config(tmp_path, mailbox, hook)
    ingest_status_change(config, tmp_path)
    assert len(mailbox.envelopes) == 1
    message = mailbox.messages()[0]
    assert message["Subject"] == ("[trialwatch] NCT07328581 — Recruitment status: "
                                  "Not yet recruiting → Recruiting")
    text = message.get_body(("plain",)).get_content()
    assert "https://clinicaltrials.gov/study/NCT07328581" in text
    assert len(hook.requests) == 1
    request = hook.requests[0]
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["type"] == "trial.changed" and payload["version"] == 3
    assert [(e["kind"], e["old"], e["new"]) for e in payload["events"]] == [
        ("status", "NOT_YET_RECRUITING", "RECRUITING")]
    assert payload["id"] == request.headers["webhook-id"]


def test_registry_text_is_escaped_in_html_and_cannot_inject_headers(tmp_path, mailbox):
    config = write_config(tmp_path, mailbox, None)
    title = "<script>alert(1)</script>\r\nBcc: x@y"
    ingest_status_change(config, tmp_path, title=title)
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["team@example.org"]]
    message = mailbox.messages()[0]
    assert message["Bcc"] is None
    html = message.get_body(("html",)).get_content()
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_subscription_kinds_filter_what_a_channel_receives(tmp_path, hook):
    config = write_config(tmp_path, None, hook, kinds=["enrollment"])
    ingest_status_change(config, tmp_path)
    assert hook.requests == []


def test_failing_receiver_is_retried_with_backoff_and_delivered_once_with_the_same_id(
        tmp_path, hook):
    hook.fail_times = 3
    config = write_config(tmp_path, None, hook)
    ingest_status_change(config, tmp_path)  # first attempt fails during ingest
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    channels = {"ops-hook": build_channel("ops-hook", {"type": "webhook", "url": hook.url,
                                                       "secret_env": "HOOK_SECRET"}, ENV)}
    policy = DeliveryPolicy(backoff=timedelta(seconds=30))
    assert deliver_due(db, channels, policy).delivered == 0  # not due yet: backoff holds it
    later = datetime.now(UTC)
    for step in (1, 2, 3):
        later += timedelta(minutes=2 ** step)
        deliver_due(db, channels, policy, now=later)
    assert len(hook.requests) == 4
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
    with db.transaction() as session:
        assert repo.outbox_counts(session) == {"ops-hook": {"pending": 0, "delivered": 1,
                                                            "dead": 0}}
    db.close()


def test_receiver_failing_forever_goes_dead_and_outbox_retry_delivers_it(tmp_path, hook):
    hook.fail_times = 10_000
    config = write_config(tmp_path, None, hook, max_attempts=2)
    ingest_status_change(config, tmp_path)
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    channels = {"ops-hook": build_channel("ops-hook", {"type": "webhook", "url": hook.url},
                                          ENV)}
    deliver_due(db, channels, DeliveryPolicy(max_attempts=2),
                now=datetime.now(UTC) + timedelta(hours=1))
    with db.transaction() as session:
        assert repo.outbox_counts(session)["ops-hook"]["dead"] == 1
    dead = trialwatch(config, "outbox", "list", "--dead", "--json")
    assert [row["status"] for row in json.loads(dead.stdout)] == ["dead"]
    hook.fail_times = 0
    retried = trialwatch(config, "outbox", "retry", "--all-dead")
    assert retried.exit_code == 0, retried.output
    with db.transaction() as session:
        assert repo.outbox_counts(session)["ops-hook"] == {"pending": 0, "delivered": 1,
                                                           "dead": 0}
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
    db.close()


def test_process_killed_between_send_and_mark_resends_with_the_same_id(tmp_path, hook):
    config = write_config(tmp_path, None, hook)
    result = trialwatch(config, "ingest", "--no-notify", str(SEED), str(CONSTRUCTED),
                        str(recruiting_copy(tmp_path)))
    assert result.exit_code == 0, result.output
    script = textwrap.dedent(f"""
        import os
        from datetime import timedelta
        from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
        from trialwatch.notifiers.registry import build_channel
        from trialwatch.storage.engine import open_database

        class SendThenDie:
            def __init__(self, inner):
                self.inner = inner
            def send(self, alert):
                self.inner.send(alert)
                os._exit(9)  # killed after the receiver got it, before the outbox is marked

        inner = build_channel("ops-hook", {{"type": "webhook", "url": {hook.url!r}}}, {{}})
        db = open_database({f"sqlite:///{tmp_path / 'tw.db'}"!r})
        deliver_due(db, {{"ops-hook": SendThenDie(inner)}},
                    DeliveryPolicy(lease=timedelta(seconds=1)))
        """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60)
    assert killed.returncode == 9
    assert len(hook.requests) == 1
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    channels = {"ops-hook": build_channel("ops-hook", {"type": "webhook", "url": hook.url}, {})}
    report = deliver_due(db, channels, now=datetime.now(UTC) + timedelta(seconds=5))
    assert report.delivered == 1
    assert [r.headers["webhook-id"] for r in hook.requests] == \
        [hook.requests[0].headers["webhook-id"]] * 2
    db.close()


def test_notify_test_sends_a_marked_test_alert(tmp_path, mailbox, hook):
    config = write_config(tmp_path, mailbox, hook)
    result = trialwatch(config, "notify", "test")
    assert result.exit_code == 0, result.output
    assert hook.requests[0].json()["type"] == "trial.test"
    assert "test alert" in mailbox.messages()[0].get_body(("plain",)).get_content().lower()


def test_notify_test_links_to_the_registry_home_page_not_a_made_up_trial(tmp_path, mailbox, hook):
    config = write_config(tmp_path, mailbox, hook)
    assert trialwatch(config, "notify", "test").exit_code == 0
    assert hook.requests[0].json()["url"] == "https://clinicaltrials.gov/"
    body = mailbox.messages()[0].get_body(("plain",)).get_content()
    assert "ClinicalTrials.gov: https://clinicaltrials.gov/\n" in body.replace("\r\n", "\n")
    assert "/study/NCT00000000" not in body


def test_no_notify_stores_alerts_without_sending(tmp_path, hook):
    config = write_config(tmp_path, None, hook)
    for path in (SEED, CONSTRUCTED, recruiting_copy(tmp_path)):
        assert trialwatch(config, "ingest", "--no-notify", str(path)).exit_code == 0
    assert hook.requests == []
    pending = trialwatch(config, "outbox", "list", "--json")
    assert [row["status"] for row in json.loads(pending.stdout)] == ["pending"]
