"""trialwatch's configuration: ``trialwatch.toml`` loaded into typed, validated, frozen models.

Every key has a default, so no file at all is valid (DESIGN.md: Configuration). Loading is
the only I/O: ``load_config`` reads the file and its permission bits, then everything else
(validation, environment overrides, warnings) is pure, with the environment passed in.

Any problem becomes one ``ConfigError`` whose ``key`` is the dotted path of the first bad
key (``schedule.interval``, ``subscriptions[0].kinds[1]``) and whose ``str`` is one line:
``trialwatch.toml: schedule.interval: invalid duration '6 hours' (use e.g. 90s, 5m, 6h, 1d)``.
Messages quote offending values only for keys that cannot hold secrets.

``[channels.X]`` tables stay raw (``ChannelConfig.settings``): the notifier named by the
channel's ``type`` validates them; ``ConfigError.from_validation_error(err, prefix=
"channels.X")`` gives its errors the same shape. Keys ending in ``_env`` name environment
variables holding secrets; ``Config.require_secrets(env)`` checks they are set.

Precedence: ``--db`` > ``TRIALWATCH_DB`` > file > default for ``database.url``;
``TRIALWATCH_CTGOV_URL`` / ``TRIALWATCH_CTGOV_HISTORY_URL`` / ``TRIALWATCH_LOG_LEVEL``
override the file's ``ctgov.base_url`` / ``ctgov.history_url`` / ``logging.level``.
"""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from trialwatch.monitor.config.database_url import (
    beside_config_file,
    default_database_url,
    overriding_database_url,
)
from trialwatch.monitor.config.durations import CronSchedule, parse_cron, parse_duration
from trialwatch.monitor.config.subscriptions import Subscription
from trialwatch.monitor.config.values import (
    DEFAULT_CONFIG_FILE,
    LOG_LEVELS,
    ByteSize,
    ConfigError,
    DatabaseUrl,
    Duration,
    HttpUrl,
    LogLevel,
    NctId,
    NonEmptyStr,
    format_key,
    invalid,
)
from trialwatch.monitor.events import DEFAULT_NOTIFY_KINDS as DEFAULT_KINDS
from trialwatch.monitor.events import KINDS as EVENT_KINDS
from trialwatch.monitor.events import SEVERITIES

__all__ = [
    "DEFAULT_KINDS",
    "EVENT_KINDS",
    "LOG_LEVELS",
    "SEVERITIES",
    "AlertsConfig",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "CtgovConfig",
    "DatabaseConfig",
    "DeliveryConfig",
    "LoggingConfig",
    "QueryConfig",
    "ScheduleConfig",
    "Subscription",
    "WatchConfig",
    "WebConfig",
    "default_database_url",
    "format_key",
    "inline_secret_warnings",
    "load_config",
    "parse_config",
]

DEFAULT_CTGOV_URL = "https://clinicaltrials.gov/api/v2"
DEFAULT_CTGOV_HISTORY_URL = "https://clinicaltrials.gov/api/int"


Severity = Literal["low", "medium", "high"]
_SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key",
                 "authorization",  # a webhook's headers.Authorization holds a credential
                 "urls")  # an apprise channel's URLs carry the services' tokens
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections --------------------------------------------------------------------------------


class DatabaseConfig(_Table):
    """``[database]``: where snapshots, events and the outbox live (SQLAlchemy URL)."""

    url: DatabaseUrl = Field(default_factory=default_database_url)


class CtgovConfig(_Table):
    """``[ctgov]``: the ClinicalTrials.gov API client (rate limit 0 = unlimited)."""

    base_url: HttpUrl = DEFAULT_CTGOV_URL
    history_url: HttpUrl = DEFAULT_CTGOV_HISTORY_URL
    requests_per_second: StrictFloat = Field(default=1.0, ge=0)
    timeout: Duration = timedelta(seconds=30)
    max_retries: StrictInt = Field(default=4, ge=0)
    # Longest request URL: how many NCT IDs one filter.ids listing request carries (12
    # characters each: ~600 at the default; 12,500 lets a page of 1,000 through, where
    # the registry and any proxy in between accept such URLs).
    max_url_length: StrictInt = Field(default=7500, ge=1000)
    # Longest registry answer read (decompressed); a longer one fails like a bad answer.
    max_response_size: ByteSize = 50 * 1024 * 1024
    # Every watched trial is fully re-fetched at least this often, counted on the registry's
    # data timeline (``dataTimestamp`` of ``/version``): catches what changes without
    # ``lastUpdatePostDate`` moving. 0 turns it off.
    reverify_every: timedelta = timedelta(days=7)

    @field_validator("reverify_every", mode="before")
    @classmethod
    def _duration_or_off(cls, value: Any) -> Any:
        if value in (0, "0") and not isinstance(value, bool):
            return timedelta(0)
        try:
            return parse_duration(value)
        except (TypeError, ValueError) as exc:
            invalid(f"{exc} (or 0 to turn re-verification off)")


class ScheduleConfig(_Table):
    """``[schedule]``: a fetch cycle every ``interval`` (default 6h) or on a ``cron`` line."""

    interval: Duration | None = timedelta(hours=6)
    cron: StrictStr | None = None
    timezone: StrictStr = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _interval_or_cron(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("cron") is not None:
            if data.get("interval") is not None:
                invalid("set either interval or cron, not both", "cron")
            return {**data, "interval": None}
        return data

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except ValueError as exc:
                invalid(str(exc))
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            invalid(f"unknown time zone {value!r} (use an IANA name such as UTC or Europe/Paris)")
        return value

    @property
    def cron_schedule(self) -> CronSchedule | None:
        """The parsed cron line; ``.fields()`` are ``CronTrigger`` keyword arguments."""
        return parse_cron(self.cron) if self.cron is not None else None

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class QueryConfig(_Table):
    """One saved registry search: ``query.term`` and/or ``query.cond``; matches → new_trial."""

    name: NonEmptyStr
    term: NonEmptyStr | None = None
    condition: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _has_criteria(self) -> QueryConfig:
        if self.term is None and self.condition is None:
            invalid(f"query {self.name!r} needs a term or a condition")
        return self


class WatchConfig(_Table):
    """``[watch]``: trials by NCT ID and saved queries (the CLI's watches add to these)."""

    trials: tuple[NctId, ...] = ()
    queries: tuple[QueryConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_query_names(self) -> WatchConfig:
        seen: set[str] = set()
        for index, query in enumerate(self.queries):
            if query.name in seen:
                invalid(f"duplicate query name {query.name!r}", "queries", index, "name")
            seen.add(query.name)
        return self


Loc = tuple[str | int, ...]


def _walk(table: Mapping[str, Any], loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every (key path, value) in a nested TOML table, through arrays of tables."""
    for key, value in table.items():
        path = (*loc, key)
        yield path, value
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, Mapping):
                yield from _walk(item, (*path, index) if isinstance(value, list) else path)


class ChannelConfig(_Table):
    """``[channels.NAME]``: ``type`` picks the notifier; ``settings`` (the rest) is its config."""

    name: StrictStr
    type: NonEmptyStr
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _env_names(self) -> ChannelConfig:
        for loc, value in _walk(self.settings):
            is_env_key = isinstance(loc[-1], str) and loc[-1].endswith("_env")
            if is_env_key and not (isinstance(value, str) and _ENV_NAME_RE.match(value)):
                invalid("expected the name of an environment variable", *loc)
        return self

    def secret_envs(self) -> dict[str, str]:
        """Dotted key (under the channel) → environment variable name, for every ``*_env``."""
        return {
            format_key(loc): value
            for loc, value in _walk(self.settings)
            if isinstance(loc[-1], str) and loc[-1].endswith("_env")
        }


class DeliveryConfig(_Table):
    """``[delivery]``: the outbox: retries with doubling backoff, dead letter after N."""

    max_attempts: StrictInt = Field(default=8, ge=1)
    backoff: Duration = timedelta(seconds=30)
    max_backoff: Duration = timedelta(hours=6)
    interval: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliveryConfig:
        if self.max_backoff < self.backoff:
            invalid("max_backoff must not be shorter than backoff", "max_backoff")
        return self


class AlertsConfig(_Table):
    """``[alerts]``: alerts about the monitor itself (kind ``system``)."""

    # consecutive failed cycles (or dead alerts of a channel) before a system alert
    failing_after: StrictInt = Field(default=3, ge=1)


class WebConfig(_Table):
    """``[web]``: ``base_url`` of the dashboard, linked from every alert (None: no links)."""

    base_url: HttpUrl | None = None


class LoggingConfig(_Table):
    """``[logging]``: structlog level and renderer (auto = console on a TTY, else JSON)."""

    level: LogLevel = "info"
    format: Literal["auto", "console", "json"] = "auto"


class Config(_Table):
    """The whole configuration; ``source`` is the file read (None: defaults only)."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    ctgov: CtgovConfig = CtgovConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    watch: WatchConfig = WatchConfig()
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    subscriptions: tuple[Subscription, ...] = ()
    delivery: DeliveryConfig = DeliveryConfig()
    alerts: AlertsConfig = AlertsConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()

    _source: Path | None = PrivateAttr(default=None)
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("channels", mode="before")
    @classmethod
    def _split_channel_tables(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        channels: dict[str, Any] = {}
        for name, table in value.items():
            if isinstance(table, Mapping):
                settings = {k: v for k, v in table.items() if k != "type"}
                table = {"name": name, "settings": settings} | (
                    {"type": table["type"]} if "type" in table else {}
                )
            channels[name] = table
        return channels

    @model_validator(mode="after")
    def _subscriptions_name_channels(self) -> Config:
        for index, subscription in enumerate(self.subscriptions):
            if subscription.channel not in self.channels:
                defined = ", ".join(sorted(self.channels)) or "none"
                invalid(
                    f"unknown channel {subscription.channel!r} (defined channels: {defined})",
                    "subscriptions", index, "channel",
                )
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems worth telling the user that do not stop loading (inline secrets)."""
        return self._warnings

    def effective_subscriptions(self) -> tuple[Subscription, ...]:
        """The subscriptions, or with none configured: status + results of every trial, to
        every channel."""
        if self.subscriptions:
            return self.subscriptions
        return tuple(Subscription(channel=name) for name in self.channels)

    def require_secrets(
        self, env: Mapping[str, str], channels: Iterable[str] | None = None
    ) -> None:
        """Raise ``ConfigError`` naming the first ``*_env`` key whose variable is unset/empty."""
        for name in self.channels if channels is None else channels:
            for key, variable in self.channels[name].secret_envs().items():
                if not env.get(variable):
                    raise ConfigError(
                        f"environment variable {variable} is not set",
                        key=f"{format_key(['channels', name])}.{key}",
                        source=str(self._source or DEFAULT_CONFIG_FILE),
                    )


# --- loading ---------------------------------------------------------------------------------


def _secret_key(name: str) -> bool:
    lowered = name.lower()
    return not lowered.endswith("_env") and lowered.replace("-", "_").endswith(_SECRET_WORDS)


def inline_secret_warnings(
    data: Mapping[str, Any], *, source: str, mode: int | None
) -> tuple[str, ...]:
    """Warnings for secrets written into a file that group/others can read (``mode & 0o044``)."""
    if mode is None or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return ()
    found: list[tuple[str, str]] = []
    channels = data.get("channels")
    if isinstance(channels, Mapping):
        for loc, value in _walk(channels):
            if isinstance(loc[-1], str) and _secret_key(loc[-1]) and value:
                found.append((format_key(("channels", *loc)), f"use {loc[-1]}_env"))
    database = data.get("database")
    url = database.get("url") if isinstance(database, Mapping) else None
    if isinstance(url, str) and re.match(r"^[^:/]+://[^/@]*:[^/@]*@", url):
        found.append(("database.url", "use TRIALWATCH_DB"))
    return tuple(
        f"{source} is readable by other users and holds an inline secret at {key}; {advice}"
        for key, advice in found
    )


def parse_config(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    cli_db: str | None = None,
    source: str = DEFAULT_CONFIG_FILE,
) -> Config:
    """Validate parsed TOML ``data`` and apply the ``env`` / ``--db`` overrides (pure)."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation_error(exc, source=source, model=Config) from None
    db_origin, db_url = overriding_database_url(cli_db, env) or ("--db", None)
    overrides = (
        ("database", "url", db_origin, db_url),
        ("ctgov", "base_url", "TRIALWATCH_CTGOV_URL", env.get("TRIALWATCH_CTGOV_URL")),
        ("ctgov", "history_url", "TRIALWATCH_CTGOV_HISTORY_URL",
         env.get("TRIALWATCH_CTGOV_HISTORY_URL")),
        ("logging", "level", "TRIALWATCH_LOG_LEVEL", env.get("TRIALWATCH_LOG_LEVEL")),
    )
    for section_name, key, origin, value in overrides:
        if not value:
            continue
        section = getattr(config, section_name)
        try:
            updated = type(section).model_validate({**section.model_dump(), key: value})
        except ValidationError as exc:
            raise ConfigError.from_validation_error(
                exc, prefix=section_name, source=origin, model=type(section)
            ) from None
        config = config.model_copy(update={section_name: updated})
    return config


def load_config(path: Path | None, *, env: Mapping[str, str], cli_db: str | None = None) -> Config:
    """Read ``path`` (None: ``./trialwatch.toml`` if present, else defaults) into a Config."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        if not candidate.is_file():
            return parse_config({}, env=env, cli_db=cli_db)
        path = candidate
    source = str(path)
    try:
        raw = path.read_bytes()
        mode: int | None = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError("configuration file not found", source=source) from None
    except OSError as exc:
        message = f"cannot read configuration file: {exc.strerror}"
        raise ConfigError(message, source=source) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("invalid TOML: the file is not UTF-8 text", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        match = re.match(r"^(.*) \(at line (\d+), column (\d+)\)$", str(exc))
        if match is None:
            raise ConfigError(f"invalid TOML: {exc}", source=source) from None
        message, line, column = match.group(1), int(match.group(2)), int(match.group(3))
        raise ConfigError(
            f"invalid TOML: {message}", source=source, line=line, column=column
        ) from None
    database = data.get("database")
    if isinstance(database, Mapping) and isinstance(database.get("url"), str):
        url = beside_config_file(database["url"], path.resolve().parent)
        data = {**data, "database": {**database, "url": url}}
    config = parse_config(data, env=env, cli_db=cli_db, source=source)
    config._source = path
    config._warnings = inline_secret_warnings(data, source=source, mode=mode)
    return config
