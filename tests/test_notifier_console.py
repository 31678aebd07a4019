"""The console notifier: readable alerts on stdout/stderr, terminal-safe."""

from __future__ import annotations

import io
from typing import Any

import pytest
from alert_samples import STATUS_EVENT, sample_alert

from trialwatch.notifiers.base import Alert, ConfigurationError, DeliveryError
from trialwatch.notifiers.console import ConsoleConfig, ConsoleNotifier
from trialwatch.notifiers.registry import build_channel


def make_alert(**overrides: Any) -> Alert:
    defaults: dict[str, Any] = {"channel": "terminal"}
    return sample_alert(**{**defaults, **overrides})


def test_writes_a_readable_alert_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleNotifier(ConsoleConfig(), {}).send(make_alert())

    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == (
        "[trialwatch] NCT07328581 — Recruitment status: Not yet recruiting → Recruiting"
    )
    assert "NCT07328581 — CAR-T Cell Therapy for Refractory Lupus" in lines
    assert "  * [high] Recruitment status: Not yet recruiting → Recruiting" in lines
    assert not any("NOT_YET_RECRUITING" in line for line in lines)  # said in words above
    assert "View the trial: https://clinicaltrials.gov/study/NCT07328581" in lines


def test_stream_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    notifier = build_channel("terminal", {"type": "console", "stream": "stderr"}, {})
    notifier.send(make_alert())
    out, err = capsys.readouterr()
    assert out == "" and "NCT07328581" in err


def test_stream_must_be_stdout_or_stderr() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("terminal", {"type": "console", "stream": "/dev/tty"}, {})
    assert caught.value.key == "channels.terminal.stream"


def test_terminal_escape_sequences_in_registry_text_are_removed() -> None:
    out = io.StringIO()
    alert = make_alert(
        title="Title\x1b]0;owned\x07\x1b[2J",
        events=[{**STATUS_EVENT, "summary": "Status\r\nFAKE LINE\x1b[31m", "new": "R\x00"}],
    )
    ConsoleNotifier(ConsoleConfig(), {}, stream=out).send(alert)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text and "\r" not in text
    assert "\nFAKE LINE" not in text  # a summary stays on its own line


def test_test_alert_is_labelled() -> None:
    out = io.StringIO()
    ConsoleNotifier(ConsoleConfig(), {}, stream=out).send(make_alert(test=True, events=[]))
    assert "This is a test alert from trialwatch" in out.getvalue()
    assert out.getvalue().startswith("[trialwatch] NCT07328581 — Test alert\n")


def test_closed_stream_is_a_delivery_error() -> None:
    out = io.StringIO()
    out.close()
    with pytest.raises(DeliveryError, match="console stdout"):
        ConsoleNotifier(ConsoleConfig(), {}, stream=out).send(make_alert())
