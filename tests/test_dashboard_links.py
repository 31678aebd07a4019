"""``[web] base_url``: every alert links to the dashboard's diff of the version it is about."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner
from docmaker import recruiting_copy
from receivers import Mailbox, WebhookReceiver, smtp_mailbox

from trialwatch.monitor.cli import cli
from trialwatch.notifiers.base import dashboard_link

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
DIFF_URL = "https://trials.example.org/trials/NCT07328581?from=2&to=3"


def _config(tmp_path: Path, body: str, base_url: str | None = "https://trials.example.org/"
            ) -> Path:
    web = f'[web]\nbase_url = "{base_url}"\n' if base_url else ""
    path = tmp_path / "trialwatch.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "tw.db"}"\n{web}'
                    + textwrap.dedent(body))
    return path


def _ingest_status_change(config: Path, tmp_path: Path) -> str:
    output = ""
    for path in (SEED, CONSTRUCTED, recruiting_copy(tmp_path)):
        result = CliRunner().invoke(cli, ["--config", str(config), "ingest", str(path)])
        assert result.exit_code == 0, result.output
        output += result.output
    return output


def test_the_link_names_the_versions_and_a_first_version_links_the_trial_page():
    base = "https://trials.example.org"
    assert dashboard_link(base, "NCT07328581", 2, 3) == DIFF_URL
    assert dashboard_link(base, "NCT07328581", None, 3) == DIFF_URL
    assert dashboard_link(base + "/", "NCT07328581", None, 1) == f"{base}/trials/NCT07328581"
    assert dashboard_link(None, "NCT07328581", 2, 3) is None


def test_email_links_the_dashboard_diff_in_text_and_html(tmp_path: Path):
    with smtp_mailbox() as box:
        config = _config(tmp_path, f"""
            [channels.mail]
            type = "email"
            host = "127.0.0.1"
            port = {box.port}
            security = "none"
            from = "trialwatch <alerts@example.org>"
            to = ["team@example.org"]
            """)
        _ingest_status_change(config, tmp_path)
        message = _only(box)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"See the change: {DIFF_URL}" in text
    assert "https://clinicaltrials.gov/study/NCT07328581" in text
    assert f'href="{DIFF_URL.replace("&", "&amp;")}"' in html


def test_the_webhook_body_carries_dashboard_url(tmp_path: Path, hook: WebhookReceiver):
    config = _config(tmp_path, f"""
        [channels.hook]
        type = "webhook"
        url = "{hook.url}"
        """)
    _ingest_status_change(config, tmp_path)
    (request,) = hook.requests
    body = request.json()
    assert body["dashboard_url"] == DIFF_URL
    assert body["url"] == "https://clinicaltrials.gov/study/NCT07328581"


def test_the_console_alert_prints_the_link(tmp_path: Path):
    config = _config(tmp_path, '[channels.term]\ntype = "console"\n')
    assert f"See the change: {DIFF_URL}" in _ingest_status_change(config, tmp_path)


def test_without_base_url_there_is_no_dashboard_link(tmp_path: Path, hook: WebhookReceiver):
    config = _config(tmp_path, f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n',
                     base_url=None)
    _ingest_status_change(config, tmp_path)
    assert hook.requests[0].json()["dashboard_url"] is None


def _only(box: Mailbox):  # type: ignore[no-untyped-def]
    (message,) = box.messages()
    return message
