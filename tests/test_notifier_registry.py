"""The notifier registry: built-ins, entry-point plugins, and channel validation."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trialwatch.notifiers.base import Alert, ConfigurationError, Notifier
from trialwatch.notifiers.console import ConsoleNotifier
from trialwatch.notifiers.email import EmailNotifier
from trialwatch.notifiers.registry import (
    PluginLoadError,
    available_notifiers,
    build_channel,
    build_channels,
    describe_notifiers,
    discover_notifiers,
)
from trialwatch.notifiers.webhook import WebhookNotifier

PLUGIN_SOURCE = Path(__file__).parent / "plugin_example"


def install_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """Write a minimal installed-distribution record (.dist-info) into ``site``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[trialwatch.notifiers]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh site-packages-like folder on sys.path (undone after the test)."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for module in [m for m in sys.modules if m.startswith("trialwatch_")]:
        del sys.modules[module]  # so the next test imports plugins afresh


@pytest.fixture
def example_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/plugin_example installed as distribution trialwatch-jsonl."""
    monkeypatch.syspath_prepend(str(PLUGIN_SOURCE))
    install_distribution(site, "trialwatch-jsonl", {"jsonl": "trialwatch_jsonl:JsonLinesNotifier"})
    return site


def test_builtins_are_available() -> None:
    found = available_notifiers()
    assert found["console"] is ConsoleNotifier
    assert found["email"] is EmailNotifier
    assert found["webhook"] is WebhookNotifier
    assert discover_notifiers().errors == ()


def test_builtins_implement_the_protocol() -> None:
    notifier = build_channel("c", {"type": "console"}, {})
    assert isinstance(notifier, Notifier)


def test_describe_lists_names_with_docstring_summaries() -> None:
    described = {info.name: info for info in describe_notifiers()}
    assert described["email"].description.startswith("Send each alert as an email")
    assert described["webhook"].description.startswith("POST each alert as JSON")
    assert described["console"].source == "built-in"


def test_example_plugin_loads_through_a_real_dist_info(
    example_plugin: Path, tmp_path: Path
) -> None:
    found = available_notifiers(strict=True)
    assert found["jsonl"].__name__ == "JsonLinesNotifier"
    assert "console" in found

    out = tmp_path / "alerts.jsonl"
    notifier = build_channel("archive", {"type": "jsonl", "path": str(out)}, {})
    alert = Alert(id="a1", channel="archive", nct_id="NCT07328581", title="T", version=2,
                  events=[{"kind": "status", "summary": "s"}])
    notifier.send(alert)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [alert.payload()]

    described = {info.name: info for info in describe_notifiers()}
    summary = "Append each alert's JSON payload as one line to a file."
    assert described["jsonl"].description == summary
    assert described["jsonl"].source == "trialwatch_jsonl:JsonLinesNotifier"


def test_plugin_configuration_errors_are_prefixed_with_the_channel(example_plugin: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("archive", {"type": "jsonl", "path": "/no/such/dir/a.jsonl"}, {})
    assert str(caught.value) == "channels.archive.path: directory /no/such/dir does not exist"
    with pytest.raises(ConfigurationError, match=r"^channels\.archive\.path: required key"):
        build_channel("archive", {"type": "jsonl"}, {})


def test_plugin_that_fails_to_import_is_reported_by_entry_point(site: Path) -> None:
    install_distribution(site, "trialwatch-broken", {"pager": "trialwatch_missing_mod:Pager"})

    discovery = discover_notifiers()
    assert {"console", "email", "webhook"} <= set(discovery.notifiers)  # the rest still work
    assert "pager" not in discovery.notifiers  # (installed plugins may add other types)
    (error,) = discovery.errors
    assert str(error) == (
        "notifier plugin 'pager' (entry point 'pager = trialwatch_missing_mod:Pager' in group "
        "trialwatch.notifiers, from trialwatch-broken 1.0) failed to load: "
        "ModuleNotFoundError: No module named 'trialwatch_missing_mod'"
    )
    with pytest.raises(PluginLoadError):
        available_notifiers(strict=True)
    with pytest.raises(ConfigurationError) as caught:
        build_channel("pages", {"type": "pager"}, {})
    assert caught.value.key == "channels.pages.type"
    assert "entry point 'pager = trialwatch_missing_mod:Pager'" in str(caught.value)
    assert "Traceback" not in str(caught.value)
    described = {info.name: info for info in describe_notifiers()}
    assert described["pager"].description.startswith("unavailable: ModuleNotFoundError")


def test_plugin_whose_class_is_not_a_notifier_is_reported(
    example_plugin: Path,
) -> None:
    install_distribution(example_plugin, "trialwatch-wrong", {
        "wrongname": "trialwatch_jsonl:JsonLinesNotifier",
        "notaclass": "trialwatch_jsonl:json",
    })
    errors = {e.name: e.reason for e in discover_notifiers().errors}
    assert errors["wrongname"] == (
        "JsonLinesNotifier.name is 'jsonl', expected 'wrongname' (the entry point name)"
    )
    assert "is not a class" in errors["notaclass"]


def test_plugin_cannot_take_a_builtin_name(site: Path) -> None:
    install_distribution(site, "trialwatch-evil", {"email": "trialwatch_evil:Mailer"})
    discovery = discover_notifiers()
    assert discovery.notifiers["email"] is EmailNotifier
    assert "taken by the built-in notifier" in discovery.errors[0].reason


def test_unknown_type_lists_known_types() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("team-chat", {"type": "slack"}, {})
    known = sorted(available_notifiers())  # the built-ins and any installed plugin
    assert {"console", "email", "webhook"} <= set(known)
    assert str(caught.value) == (
        "channels.team-chat.type: unknown notifier type 'slack'; "
        f"known types: {', '.join(known)}"
    )


def test_missing_type_is_an_error() -> None:
    known = r"(.*, )?apprise, (.*, )?console"  # plugins installed beside may add types
    with pytest.raises(ConfigurationError, match=rf"^channels\.x\.type: missing; one of: {known}"):
        build_channel("x", {"stream": "stdout"}, {})


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"type": "console", "colour": "red"}, "channels.c.colour", "unknown key (valid keys: "
         "type, stream)"),
        ({"type": "webhook", "url": "https://e.org/h", "timeout": "soon"}, "channels.c.timeout",
         "Input should be a valid number"),
        ({"type": "webhook"}, "channels.c.url", "required key is missing"),
        ({"type": "email", "host": "h", "from": "a@e.org", "to": ["b@e.org"], "port": "x"},
         "channels.c.port", "Input should be a valid integer"),
    ],
)
def test_bad_key_error_names_the_key(table: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("c", table, {})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: {reason}")


def test_channel_names_that_are_not_bare_keys_are_quoted() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("ops hook", {"type": "nope"}, {})
    assert caught.value.key == 'channels."ops hook".type'


def test_build_channels_builds_every_table() -> None:
    built = build_channels(
        {"terminal": {"type": "console"}, "hook": {"type": "webhook", "url": "https://e.org/h"}},
        {},
    )
    assert isinstance(built["terminal"], ConsoleNotifier)
    assert isinstance(built["hook"], WebhookNotifier)
