"""trialwatch.toml loading: defaults, the DESIGN.md example, one error per bad key,
environment / --db precedence, durations, subscriptions and the inline-secret warning."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import platformdirs
import pytest

from trialwatch.monitor.config.durations import format_duration, parse_cron, parse_duration
from trialwatch.monitor.config.settings import (
    DEFAULT_KINDS,
    Config,
    ConfigError,
    Subscription,
    load_config,
)

# Copied verbatim from DESIGN.md, "Configuration".
DESIGN_EXAMPLE = """\
[database]
url = "sqlite:///trialwatch.db"          # overridden by --db / TRIALWATCH_DB

[ctgov]
base_url = "https://clinicaltrials.gov/api/v2"
requests_per_second = 1.0

[schedule]
interval = "6h"                          # or: cron = "0 15 * * 1-5"

[watch]
trials = ["NCT07328581"]
queries = [{ name = "lupus-cart", term = "CAR-T", condition = "lupus" }]

[channels.team-mail]
type = "email"
host = "smtp.example.org"
port = 587
security = "starttls"                    # starttls | tls | none
username = "alerts@example.org"
password_env = "TRIALWATCH_SMTP_PASSWORD"
from = "trialwatch <alerts@example.org>"
to = ["team@example.org"]

[channels.ops-hook]
type = "webhook"
url = "https://example.org/hooks/trialwatch"
secret_env = "TRIALWATCH_WEBHOOK_SECRET" # Standard Webhooks secret: "whsec_" + base64 key

[[subscriptions]]
channel = "team-mail"
kinds = ["status", "results"]            # the default
trials = ["NCT07328581"]                 # default: every watched trial
min_severity = "low"

[delivery]
max_attempts = 8
backoff = "30s"                          # first retry delay; doubles each attempt
"""

CHANNEL = '[channels.box]\ntype = "console"\n'


def write(tmp_path: Path, text: str, name: str = "trialwatch.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load_text(tmp_path: Path, text: str, **kwargs: object) -> Config:
    env = kwargs.pop("env", {})
    return load_config(write(tmp_path, text), env=env, **kwargs)  # type: ignore[arg-type]


def error_for(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert "\n" not in str(caught.value)
    return caught.value


# --- loading -------------------------------------------------------------------------------


def test_no_file_at_all_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.source is None
    assert config.ctgov.base_url == "https://clinicaltrials.gov/api/v2"
    assert config.ctgov.history_url == "https://clinicaltrials.gov/api/int"
    assert config.ctgov.requests_per_second == 1.0
    assert config.ctgov.timeout == timedelta(seconds=30)
    assert config.ctgov.max_retries == 4
    assert config.schedule.interval == timedelta(hours=6)
    assert config.schedule.cron is None
    assert config.schedule.timezone == "UTC"
    assert config.watch.trials == () and config.watch.queries == ()
    assert config.channels == {} and config.subscriptions == ()
    assert config.delivery.max_attempts == 8
    assert config.delivery.backoff == timedelta(seconds=30)
    assert config.delivery.max_backoff == timedelta(hours=6)
    assert config.delivery.interval == timedelta(seconds=5)
    assert (config.logging.level, config.logging.format) == ("info", "auto")
    assert config.warnings == ()


def test_trialwatch_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, '[schedule]\ninterval = "15m"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.schedule.interval == timedelta(minutes=15)
    assert config.source == Path("trialwatch.toml")


def test_explicit_path_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})
    assert str(caught.value) == f"{missing}: configuration file not found"


def test_design_example_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, DESIGN_EXAMPLE)
    assert config.database.url == f"sqlite:///{tmp_path / 'trialwatch.db'}"  # beside the file
    assert config.schedule.interval == timedelta(hours=6)
    assert config.watch.trials == ("NCT07328581",)
    assert config.watch.queries[0].name == "lupus-cart"
    assert config.watch.queries[0].condition == "lupus"
    mail = config.channels["team-mail"]
    assert (mail.name, mail.type) == ("team-mail", "email")
    assert mail.settings["port"] == 587 and mail.settings["to"] == ["team@example.org"]
    assert "type" not in mail.settings
    assert config.channels["ops-hook"].settings["secret_env"] == "TRIALWATCH_WEBHOOK_SECRET"
    assert config.subscriptions[0].channel == "team-mail"
    assert config.subscriptions[0].trials == ("NCT07328581",)
    assert config.warnings == ()


# --- one error, naming its key -------------------------------------------------------------


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[scheduler]\ninterval = '6h'\n")
    assert error.key == "scheduler"
    assert "unknown key" in str(error) and "'schedule'" in str(error)


def test_unknown_nested_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[delivery]\nmax_attempt = 3\n")
    assert error.key == "delivery.max_attempt"
    assert str(error) == (
        f"{tmp_path / 'trialwatch.toml'}: delivery.max_attempt: "
        "unknown key (did you mean 'max_attempts'?)"
    )


def test_wrong_type_is_named(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[delivery]\nmax_attempts = "8"\n')
    assert error.key == "delivery.max_attempts"
    assert "expected an integer, got a string" in str(error)


def test_bad_duration_is_named_with_examples(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[schedule]\ninterval = "6 hours"\n')
    assert error.key == "schedule.interval"
    assert str(error) == (
        f"{tmp_path / 'trialwatch.toml'}: schedule.interval: invalid duration '6 hours' "
        "(use e.g. 90s, 5m, 6h, 1d)"
    )


def test_bad_nct_id_in_watch_trials_names_its_index(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[watch]\ntrials = ["NCT07328581", "NCT123"]\n')
    assert error.key == "watch.trials[1]"
    assert "'NCT123'" in str(error)


def test_subscription_naming_an_unknown_channel_is_named(tmp_path: Path) -> None:
    error = error_for(tmp_path, CHANNEL + '[[subscriptions]]\nchannel = "team-mial"\n')
    assert error.key == "subscriptions[0].channel"
    assert "unknown channel 'team-mial'" in str(error) and "box" in str(error)


def test_unknown_event_kind_is_named(tmp_path: Path) -> None:
    text = CHANNEL + '[[subscriptions]]\nchannel = "box"\nkinds = ["status", "statuz"]\n'
    error = error_for(tmp_path, text)
    assert error.key == "subscriptions[0].kinds[1]"
    assert "unknown event kind 'statuz'" in str(error)


def test_bad_min_severity_lists_the_choices(tmp_path: Path) -> None:
    text = CHANNEL + '[[subscriptions]]\nchannel = "box"\nmin_severity = "urgent"\n'
    error = error_for(tmp_path, text)
    assert error.key == "subscriptions[0].min_severity"
    assert "'low', 'medium' or 'high'" in str(error)


def test_interval_and_cron_together_are_an_error(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[schedule]\ninterval = "6h"\ncron = "0 15 * * 1-5"\n')
    assert error.key == "schedule.cron"
    assert "not both" in str(error)


def test_cron_with_wrong_field_count_is_an_error(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[schedule]\ncron = "0 15 * *"\n')
    assert error.key == "schedule.cron"
    assert "expected 5 fields" in str(error)


def test_channel_without_type_is_named(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[channels.ops]\nurl = "https://example.org"\n')
    assert error.key == "channels.ops.type"


def test_env_key_must_name_a_variable(tmp_path: Path) -> None:
    error = error_for(tmp_path, CHANNEL + 'password_env = "hunter2 secret"\n')
    assert error.key == "channels.box.password_env"
    assert "hunter2" not in str(error)


def test_query_needs_a_term_or_a_condition(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[watch]\nqueries = [{ name = "empty" }]\n')
    assert error.key == "watch.queries[0]"


def test_duplicate_query_names_are_an_error(tmp_path: Path) -> None:
    text = '[watch]\nqueries = [{ name = "a", term = "x" }, { name = "a", condition = "y" }]\n'
    assert error_for(tmp_path, text).key == "watch.queries[1].name"


def test_toml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[schedule]\ninterval = "6h"\ncron = \n')
    assert error.key is None
    assert (error.line, error.column) == (3, 8)
    assert str(error).startswith(f"{tmp_path / 'trialwatch.toml'}: line 3, column 8: invalid TOML")


# --- precedence ----------------------------------------------------------------------------

DB_FILE = '[database]\nurl = "sqlite:///from-file.db"\n'


def test_cli_db_beats_environment_and_file(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, DB_FILE, env={"TRIALWATCH_DB": "sqlite:///from-env.db"},
        cli_db="postgresql+psycopg://localhost/tw",
    )
    assert config.database.url == "postgresql+psycopg://localhost/tw"


def test_trialwatch_db_beats_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, DB_FILE, env={"TRIALWATCH_DB": "sqlite:///from-env.db"})
    assert config.database.url == "sqlite:///from-env.db"


def test_file_database_url_beats_default(tmp_path: Path) -> None:
    assert load_text(tmp_path, DB_FILE).database.url == f"sqlite:///{tmp_path / 'from-file.db'}"


def test_default_database_is_sqlite_in_user_data_dir(tmp_path: Path) -> None:
    expected = Path(platformdirs.user_data_dir("trialwatch")) / "trialwatch.db"
    url = load_text(tmp_path, "").database.url
    assert url == f"sqlite:///{expected}"
    assert url.startswith("sqlite:////")


def test_cli_db_bare_path_becomes_absolute_sqlite_url(tmp_path: Path) -> None:
    config = load_text(tmp_path, "", cli_db=str(tmp_path / "x.db"))
    assert config.database.url == f"sqlite:///{tmp_path / 'x.db'}"


def test_ctgov_url_env_overrides_file(tmp_path: Path) -> None:
    text = '[ctgov]\nbase_url = "https://example.org/api/v2"\n'
    env = {"TRIALWATCH_CTGOV_URL": "http://127.0.0.1:8765/api/v2/"}
    config = load_text(tmp_path, text, env=env)
    assert config.ctgov.base_url == "http://127.0.0.1:8765/api/v2"


def test_ctgov_history_url_env_overrides_default(tmp_path: Path) -> None:
    env = {"TRIALWATCH_CTGOV_HISTORY_URL": "http://127.0.0.1:8765/api/int"}
    assert load_text(tmp_path, "", env=env).ctgov.history_url == "http://127.0.0.1:8765/api/int"


def test_log_level_env_overrides_file(tmp_path: Path) -> None:
    env = {"TRIALWATCH_LOG_LEVEL": "DEBUG"}
    config = load_text(tmp_path, '[logging]\nlevel = "info"\n', env=env)
    assert config.logging.level == "debug"


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "", env={"TRIALWATCH_CTGOV_URL": "localhost:8765"})
    assert caught.value.key == "ctgov.base_url"
    assert str(caught.value).startswith("TRIALWATCH_CTGOV_URL: ctgov.base_url: invalid URL")


# --- durations and cron --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("6h", timedelta(hours=6)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("45", timedelta(seconds=45)),
        (600, timedelta(minutes=10)),
    ],
)
def test_parse_duration_accepts(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0s", "0", 0, -5, "6 hours", "", "1.5h", "h", "5m1h", True])
def test_parse_duration_rejects_with_examples(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"90s, 5m, 6h, 1d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["45s", "5m", "6h", "1d", "1h30m", "1d2h3m4s"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_cron_weekdays_are_translated_for_apscheduler() -> None:
    # cron counts weekdays from Sunday = 0; APScheduler from Monday = 0.
    assert parse_cron("0 15 * * 1-5").fields()["day_of_week"] == "mon,tue,wed,thu,fri"
    assert parse_cron("0 9 * * 0,7").fields()["day_of_week"] == "sun"


def test_cron_alone_replaces_the_default_interval(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[schedule]\ncron = "0 15 * * 1-5"\ntimezone = "Europe/Paris"\n')
    assert config.schedule.interval is None
    assert config.schedule.cron_schedule is not None
    assert config.schedule.cron_schedule.fields()["hour"] == "15"


# --- subscriptions -------------------------------------------------------------------------


def test_without_subscriptions_every_channel_gets_status_and_results(tmp_path: Path) -> None:
    text = '[channels.a]\ntype = "console"\n[channels.b]\ntype = "webhook"\nurl = "https://x.org"\n'
    subscriptions = load_text(tmp_path, text).effective_subscriptions()
    assert [s.channel for s in subscriptions] == ["a", "b"]
    assert all(s.kinds == DEFAULT_KINDS and s.trials is None for s in subscriptions)
    assert all(s.min_severity == "low" for s in subscriptions)


def test_configured_subscriptions_replace_the_default(tmp_path: Path) -> None:
    text = '[channels.a]\ntype = "console"\n[channels.b]\ntype = "console"\n'
    text += '[[subscriptions]]\nchannel = "b"\nkinds = ["all"]\n'
    subscriptions = load_text(tmp_path, text).effective_subscriptions()
    assert [(s.channel, s.kinds) for s in subscriptions] == [("b", ("all",))]


def event(kind: str = "status", severity: str = "high") -> dict[str, str]:
    return {"nct_id": "NCT07328581", "kind": kind, "severity": severity}


def test_matches_filters_on_kinds() -> None:
    subscription = Subscription(channel="a")
    assert subscription.matches(event("results"), nct_id="NCT07328581", query_names=set())
    assert not subscription.matches(event("locations"), nct_id="NCT07328581", query_names=set())


def test_matches_all_kinds() -> None:
    subscription = Subscription(channel="a", kinds=("all",))
    assert subscription.matches(event("locations"), nct_id="NCT07328581", query_names=set())


def test_matches_filters_on_min_severity() -> None:
    subscription = Subscription(channel="a", min_severity="medium")
    assert subscription.matches(event(severity="high"), nct_id="NCT07328581", query_names=set())
    assert subscription.matches(event(severity="medium"), nct_id="NCT07328581", query_names=set())
    assert not subscription.matches(event(severity="low"), nct_id="NCT07328581", query_names=set())


def test_matches_filters_on_trials() -> None:
    subscription = Subscription(channel="a", trials=("NCT07328581",))
    assert subscription.matches(event(), nct_id="NCT07328581", query_names=set())
    assert not subscription.matches(event(), nct_id="NCT00184067", query_names=set())


def test_matches_trials_found_through_a_listed_query() -> None:
    subscription = Subscription(channel="a", trials=("NCT07328581",), queries=("lupus-cart",))
    assert subscription.matches(event(), nct_id="NCT00184067", query_names={"lupus-cart"})
    assert not subscription.matches(event(), nct_id="NCT00184067", query_names={"other"})


# --- secrets -------------------------------------------------------------------------------

INLINE_SECRET = CHANNEL + 'password = "hunter2"\n'


def test_world_readable_inline_secret_warns(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, INLINE_SECRET, mode=0o644), env={})
    assert len(config.warnings) == 1
    warning = config.warnings[0]
    assert "readable by other users" in warning
    assert "channels.box.password" in warning and "password_env" in warning
    assert "hunter2" not in warning


def test_private_inline_secret_does_not_warn(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, INLINE_SECRET, mode=0o600), env={}).warnings == ()


def test_secret_named_by_env_key_does_not_warn(tmp_path: Path) -> None:
    text = CHANNEL + 'password_env = "TRIALWATCH_SMTP_PASSWORD"\n'
    assert load_config(write(tmp_path, text, mode=0o644), env={}).warnings == ()


def test_require_secrets_names_the_key_of_an_unset_variable(tmp_path: Path) -> None:
    config = load_text(tmp_path, DESIGN_EXAMPLE)
    with pytest.raises(ConfigError) as caught:
        config.require_secrets({"TRIALWATCH_SMTP_PASSWORD": "x"})
    assert caught.value.key == "channels.ops-hook.secret_env"
    assert "TRIALWATCH_WEBHOOK_SECRET is not set" in str(caught.value)
    env = {"TRIALWATCH_SMTP_PASSWORD": "x", "TRIALWATCH_WEBHOOK_SECRET": "whsec_eA=="}
    config.require_secrets(env)


def test_error_in_the_default_file_is_one_line_starting_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, '[schedule]\ninterval = "6 hours"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={})
    assert str(caught.value) == (
        "trialwatch.toml: schedule.interval: invalid duration '6 hours' (use e.g. 90s, 5m, 6h, 1d)"
    )


def test_ctgov_max_url_length_sets_how_many_ids_a_listing_request_carries(
        tmp_path: Path) -> None:
    from trialwatch.monitor.service.context import App

    (tmp_path / "trialwatch.toml").write_text("[ctgov]\nmax_url_length = 12500\n")
    app = App(config_path=tmp_path / "trialwatch.toml", env={})
    with app.registry_client() as client:
        assert client.ids_per_listing_request() == 1000
        assert client.listing_requests(10_000) == 10
    with App(env={}).registry_client() as default:
        assert 550 <= default.ids_per_listing_request() < 650


def test_ctgov_max_url_length_below_1000_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ctgov\.max_url_length"):
        load_text(tmp_path, "[ctgov]\nmax_url_length = 200\n")
