"""The apprise channel against real local receivers, through the real Apprise library.

``json://`` and ``rocket://`` (Rocket.Chat webhooks, a 1,000-character limit) post to a
local HTTP receiver, ``mailto://`` talks to a local aiosmtpd server, and the partial-failure
retry runs through the real outbox on a SQLite file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alert_samples import STATUS_EVENT, sample_alert
from click.testing import CliRunner
from docmaker import recruiting_copy
from receivers import Mailbox, WebhookReceiver, smtp_mailbox, webhook_receiver

from trialwatch.monitor.cli import cli
from trialwatch.notifiers.apprise import AppriseNotifier, split_urls, target_key
from trialwatch.notifiers.base import Alert, ConfigurationError, DeliveryError, PartialDelivery
from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel, describe_notifiers
from trialwatch.notifiers.render import subject
from trialwatch.storage.engine import open_database
from trialwatch.storage.models import OutboxEntry

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
TOKEN = "Sup3rSecretT0ken"


def json_url(receiver: WebhookReceiver) -> str:
    """The receiver's address as an Apprise ``json://`` URL."""
    return "json://" + receiver.url.removeprefix("http://")


def channel(env: dict[str, str] | None = None, **table: Any) -> Any:
    return build_channel("chat", {"type": "apprise", **table}, env or {})


def config_error(env: dict[str, str] | None = None, **table: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        channel(env, **table)
    return str(caught.value)


def events(count: int) -> list[dict[str, Any]]:
    return [{**STATUS_EVENT, "kind": "locations", "severity": "low", "old": None, "new": None,
             "summary": f"Site added: Hospital number {i} in a city with a long name"}
            for i in range(count)]


@pytest.fixture
def second_hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver("/hooks/second") as receiver:
        yield receiver


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_mailbox() as box:
        yield box


# --- what the services receive -----------------------------------------------------------


def test_json_receiver_gets_the_subject_as_title_and_a_markdown_body(hook):
    alert = sample_alert(dashboard_url="https://trials.example.org/trials/NCT07328581?from=1&to=2")
    channel({"CHAT_URLS": json_url(hook)}, urls_env="CHAT_URLS").send(alert)
    (request,) = hook.requests
    posted = request.json()
    assert posted["title"] == subject(alert) == (
        "[trialwatch] NCT07328581 — Recruitment status: Not yet recruiting → Recruiting")
    assert posted["type"] == "info"
    body = posted["message"]
    assert body.startswith("**NCT07328581 — CAR-T Cell Therapy for Refractory Lupus**")
    assert "- **high** · Recruitment status: Not yet recruiting → Recruiting" in body
    assert "[View the trial on ClinicalTrials.gov](https://clinicaltrials.gov/study/NCT07328581)" \
        in body
    assert ("[See the change on the dashboard]"
            "(https://trials.example.org/trials/NCT07328581?from=1&to=2)") in body


def test_registry_text_cannot_make_markup_or_links_in_the_body(hook):
    alert = sample_alert(title="<script>x</script> **bold** [click](https://evil.example)")
    channel(urls=[json_url(hook)]).send(alert)
    body = hook.requests[0].json()["message"]
    assert r"\<script\>x\</script\> \*\*bold\*\* \[click\](https://evil.example)" in body
    assert "<script>" not in body


def test_a_text_only_service_gets_plain_text_without_markdown_escapes(hook):
    hook.status = 200  # ntfy answers 200
    url = f"ntfy://{hook.url.removeprefix('http://').split('/')[0]}/trials"
    notifier = channel(urls=[url])
    assert not notifier.targets[0].takes_markdown  # Apprise's ntfy plugin sends text
    notifier.send(sample_alert(title="A *b* <c>"))
    posted = hook.requests[0].json()
    assert posted["topic"] == "trials"
    assert posted["message"].startswith("NCT07328581 — A *b* <c>\n\nVersion 2\n\n- high · ")
    assert "View the trial on ClinicalTrials.gov: https://clinicaltrials.gov/study/NCT07328581" \
        in posted["message"]


def test_title_prefix_is_configurable(hook):
    channel(urls=[json_url(hook)], title_prefix="[lupus]").send(sample_alert())
    assert hook.requests[0].json()["title"].startswith("[lupus] NCT07328581 — ")


def test_mailto_delivers_to_a_local_smtp_server(mailbox):
    url = (f"mailto://127.0.0.1:{mailbox.port}?mode=insecure&from=alerts@example.org"
           "&to=team@example.org")
    alert = sample_alert(title="Lupus <b>trial</b>")
    channel(urls=[url]).send(alert)
    (message,) = mailbox.messages()
    assert message["Subject"] == subject(alert)
    assert mailbox.envelopes[0].rcpt_tos == ["team@example.org"]
    html = message.get_body(("html",)).get_content()
    assert "Lupus &lt;b&gt;trial&lt;/b&gt;" in html and "<b>trial</b>" not in html
    assert '<a href="https://clinicaltrials.gov/study/NCT07328581">' in html


def test_each_url_in_the_variable_gets_the_alert(hook, second_hook):
    env = {"CHAT_URLS": f"{json_url(hook)},\n  {json_url(second_hook)}"}
    channel(env, urls_env="CHAT_URLS").send(sample_alert())
    assert len(hook.requests) == 1 and len(second_hook.requests) == 1


def test_urls_are_split_on_whitespace_and_commas():
    assert split_urls(" a://x, b://y\n\tc://z,,d://w ") == ["a://x", "b://y", "c://z", "d://w"]


# --- one delivery target per URL -----------------------------------------------------------


def test_target_keys_are_short_hashes_never_the_url(hook):
    url = f"{json_url(hook)}/{TOKEN}"
    notifier = channel(urls=[url])
    (target,) = notifier.targets
    assert target.key == target_key(url) and len(target.key) == 16
    assert TOKEN not in target.key and TOKEN not in target.label and TOKEN not in repr(notifier)


def test_targets_that_already_have_the_alert_are_skipped(hook, second_hook):
    notifier = channel(urls=[json_url(hook), json_url(second_hook)])
    notifier.send(sample_alert(done_targets=frozenset({target_key(json_url(hook))})))
    assert hook.requests == [] and len(second_hook.requests) == 1


def test_a_failing_service_raises_partial_delivery_naming_it_without_secrets(hook, second_hook):
    second_hook.fail_times = 1
    bad = f"{json_url(second_hook)}?{TOKEN}=1"
    notifier = channel(urls=[json_url(hook), bad])
    with pytest.raises(PartialDelivery) as caught:
        notifier.send(sample_alert())
    assert caught.value.done == {target_key(json_url(hook))}
    port = second_hook.url.split(":")[2].split("/")[0]
    assert str(caught.value).startswith(f"apprise: JSON (json://127.0.0.1:{port}) failed")
    assert "500" in str(caught.value) and TOKEN not in str(caught.value)


def test_when_every_service_fails_nothing_is_marked_done(hook):
    hook.fail_times = 1
    with pytest.raises(DeliveryError) as caught:
        channel(urls=[json_url(hook)]).send(sample_alert())
    assert not isinstance(caught.value, PartialDelivery)


def test_a_service_slower_than_the_timeout_fails_in_time(hook):
    hook.delay = 5
    notifier = channel(urls=[json_url(hook)], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"^apprise: JSON \(json://127\.0\.0\.1:\d+\) failed"):
        notifier.send(sample_alert())
    assert time.monotonic() - started < 3


def test_failure_reasons_of_concurrent_sends_stay_with_their_own_service(hook, second_hook):
    hook.fail_times, hook.fail_status = 100, 500
    second_hook.fail_times, second_hook.fail_status = 100, 404
    notifiers = {"first": channel(urls=[json_url(hook)]),
                 "second": channel(urls=[json_url(second_hook)])}
    errors: dict[str, list[str]] = {"first": [], "second": []}

    def send(name: str) -> None:
        for _ in range(5):
            try:
                notifiers[name].send(sample_alert())
            except DeliveryError as exc:
                errors[name].append(str(exc))

    threads = [threading.Thread(target=send, args=(name,)) for name in notifiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors["first"]) == len(errors["second"]) == 5
    assert all("error=500" in e and "error=404" not in e for e in errors["first"])
    assert all("error=404" in e and "error=500" not in e for e in errors["second"])


def write_config(tmp_path: Path, db_url: str | None = None) -> Path:
    path = tmp_path / "trialwatch.toml"
    path.write_text(textwrap.dedent(f"""
        [database]
        url = "{db_url or f'sqlite:///{tmp_path / "tw.db"}'}"
        [delivery]
        backoff = "30s"
        [channels.chat]
        type = "apprise"
        urls_env = "CHAT_URLS"
        """))
    path.chmod(0o600)
    return path


def test_a_retry_goes_only_to_the_service_that_failed(tmp_path, hook, second_hook, backend_url):
    """On a real SQLite file and on PostgreSQL: the done targets live in the outbox row."""
    second_hook.fail_times = 1
    env = {"CHAT_URLS": f"{json_url(hook)} {json_url(second_hook)}"}
    config = write_config(tmp_path, backend_url)
    for path in (SEED, CONSTRUCTED, recruiting_copy(tmp_path)):
        result = CliRunner().invoke(cli, ["--config", str(config), "ingest", str(path)], env=env)
        assert result.exit_code == 0, result.output
    # ingest delivered once: the first receiver has the alert, the second answered 500
    assert len(hook.requests) == 1 and len(second_hook.requests) == 1
    db = open_database(backend_url)
    with db.transaction() as session:
        (row,) = session.query(OutboxEntry).all()
        alert_id = row.id
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.done_targets == [target_key(json_url(hook))]
    report = deliver_due(db, {"chat": channel(env, urls_env="CHAT_URLS")}, DeliveryPolicy(),
                         now=datetime.now(UTC) + timedelta(minutes=5))
    assert report.delivered == 1
    assert len(hook.requests) == 1  # the service that had it got it exactly once
    assert len(second_hook.requests) == 2
    assert second_hook.requests[1].json() == hook.requests[0].json()
    with db.transaction() as session:
        (row,) = session.query(OutboxEntry).all()
        assert (row.id, row.status, row.attempts) == (alert_id, "delivered", 2)
    db.close()


# --- length limits -------------------------------------------------------------------------


def test_a_body_past_the_services_limit_is_shortened_with_a_link_to_the_rest(hook):
    hook.status = 200  # Rocket.Chat webhooks answer 200
    url = f"rocket://webhookid/{TOKEN}@{hook.url.removeprefix('http://').split('/')[0]}" \
          "/?mode=webhook"
    notifier = channel(urls=[url])
    assert notifier.targets[0].plugin.body_maxlen == 1000  # Apprise's limit for Rocket.Chat
    link = "https://trials.example.org/trials/NCT07328581?from=1&to=2"
    alert = sample_alert(events=events(40), dashboard_url=link)
    notifier.send(alert)
    text = hook.requests[0].json()["text"]  # Rocket.Chat shows the title in the text
    assert len(text) <= 1000
    shown = text.count("\n- ")
    assert 0 < shown < 40
    assert text.endswith(f"… {40 - shown} more changes: {link}")


def test_a_body_within_the_limit_is_sent_whole(hook):
    hook.status = 200
    url = f"rocket://webhookid/{TOKEN}@{hook.url.removeprefix('http://').split('/')[0]}" \
          "/?mode=webhook"
    channel(urls=[url]).send(sample_alert(events=events(3)))
    text = hook.requests[0].json()["text"]
    assert text.count("\n- ") == 3 and "more change" not in text


# --- configuration -------------------------------------------------------------------------


def test_apprise_is_a_built_in_channel_type():
    described = {info.name: info for info in describe_notifiers()}
    assert described["apprise"].source == "built-in"
    assert described["apprise"].description.startswith("Send each alert through Apprise URLs")


def test_missing_environment_variable_names_the_key():
    assert config_error(urls_env="CHAT_URLS") == (
        "channels.chat.urls_env: environment variable CHAT_URLS is not set")


def test_empty_environment_variable_names_the_key():
    assert config_error({"CHAT_URLS": " , "}, urls_env="CHAT_URLS") == (
        "channels.chat.urls_env: environment variable CHAT_URLS holds no Apprise URLs")


def test_neither_urls_nor_urls_env_is_an_error():
    assert config_error().startswith("channels.chat.urls_env: required")


def test_both_urls_and_urls_env_is_an_error():
    assert config_error(urls=["json://127.0.0.1/x"], urls_env="CHAT_URLS") == (
        "channels.chat.urls_env: set either urls_env or urls, not both")


def test_an_unknown_scheme_is_named_without_the_rest_of_the_url():
    message = config_error({"CHAT_URLS": f"json://127.0.0.1/x nosuch://{TOKEN}@host"},
                           urls_env="CHAT_URLS")
    assert message == ("channels.chat.urls_env: URL 2 in the variable has scheme nosuch://, "
                       "which Apprise does not know")


def test_an_invalid_url_of_a_known_service_is_named_by_scheme_never_by_token():
    message = config_error(urls=[f"slack://{TOKEN}"])
    assert message.startswith("channels.chat.urls[0]: URL is not a valid slack:// URL")
    assert TOKEN not in message


def test_a_missing_apprise_library_is_a_config_error_naming_the_extra(tmp_path, hook):
    """Run the real CLI in a Python where importing apprise fails, as when it is not
    installed."""
    config = write_config(tmp_path)
    program = textwrap.dedent("""
        import sys

        class NoApprise:
            def find_spec(self, name, path=None, target=None):
                if name == "apprise" or name.startswith("apprise."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoApprise())
        for name in [m for m in sys.modules if m == "apprise" or m.startswith("apprise.")]:
            del sys.modules[name]
        from trialwatch.monitor.cli import main
        sys.argv = ["trialwatch", *sys.argv[1:]]
        main()
        """)
    result = subprocess.run(
        [sys.executable, "-c", program, "--config", str(config), "notify", "test"],
        capture_output=True, text=True, env={"CHAT_URLS": json_url(hook), "PATH": "/usr/bin"},
        timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "apprise" in line]
    assert "channels.chat.type: channel type 'apprise' needs the Apprise library: " \
           "pip install 'trialwatch[apprise]'" in line
    assert hook.requests == []


def test_notify_test_sends_a_test_alert_through_an_apprise_channel(tmp_path, hook):
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "notify", "test", "chat"],
                                env={"CHAT_URLS": json_url(hook)})
    assert result.exit_code == 0, result.output
    assert "chat: test alert sent" in result.output
    posted = hook.requests[0].json()
    assert posted["title"] == "[trialwatch] NCT00000000 — Test alert"
    assert posted["message"].startswith("This is a test alert from trialwatch (channel chat)")


def test_alerts_for_an_instance_built_once_keep_going_to_every_target(hook, second_hook):
    notifier = AppriseNotifier(AppriseNotifier.Config.model_validate(
        {"urls": [json_url(hook), json_url(second_hook)]}), {})
    for number in range(3):
        notifier.send(sample_alert(id=f"alert-{number}"))
    assert len(hook.requests) == 3 and len(second_hook.requests) == 3


def test_digest_and_system_alerts_render_for_chat(hook):
    notifier = channel(urls=[json_url(hook)])
    system = Alert(id="s1", channel="chat", nct_id="", title=None, version=0, events=(),
                   kind="system", system={"summary": "Checks are failing since 06:00",
                                          "since": "2026-12-03T06:00:00Z",
                                          "reason": "registry answered 503"})
    notifier.send(system)
    body = hook.requests[0].json()["message"]
    assert body.startswith("**Checks are failing since 06:00**")
    assert "Reason: registry answered 503" in body


def test_the_readme_slack_and_teams_examples_are_urls_apprise_accepts():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Apprise: Slack, Teams"):]
    (line,) = [ln for ln in section.splitlines() if ln.startswith("export TRIALWATCH_CHAT_URLS=")]
    urls = line.split("=", 1)[1].strip('"')
    notifier = channel({"TRIALWATCH_CHAT_URLS": urls}, urls_env="TRIALWATCH_CHAT_URLS")
    assert [t.label for t in notifier.targets] == [
        "Slack (slack://)",
        "Power Automate / Workflows (for MSTeams) "
        "(workflows://your-env.westeurope.logic.azure.com:443)"]
