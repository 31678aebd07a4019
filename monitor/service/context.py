"""The per-invocation context commands share: configuration, database, subscriptions.

Built once by the CLI from the global options; everything is loaded lazily so ``--help``
and file-only commands (``diff FILE FILE``) never touch the configuration or database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trialwatch.monitor.errors import CommandError, database_busy
from trialwatch.monitor.redaction import mask_database_message, mask_url_passwords

if TYPE_CHECKING:
    from trialwatch.monitor.config.settings import Config
    from trialwatch.monitor.digests import DigestReport
    from trialwatch.monitor.sources.ctgov.client import RegistryClient
    from trialwatch.notifiers.base import Notifier
    from trialwatch.notifiers.outbox import DeliveryPolicy, DeliveryReport
    from trialwatch.storage.engine import Database


@dataclass
class App:
    config_path: Path | None = None
    db_url: str | None = None
    log_format: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: (renderer, level) for ``configure_logging``; applied by ``ensure_logging``, which the
    #: CLI calls up front except for quick read-only commands (then on first need).
    log_settings: tuple[str, str] | None = None
    _database: Database | None = field(default=None, init=False, repr=False)
    _logging_ready: bool = field(default=False, init=False, repr=False)

    def ensure_logging(self) -> None:
        """Configure structlog once, with ``log_settings`` (nothing when there are none)."""
        if self._logging_ready or self.log_settings is None:
            return
        from trialwatch.monitor.service.logs import configure_logging

        configure_logging(*self.log_settings)
        self._logging_ready = True

    @cached_property
    def config(self) -> Config:
        from trialwatch.monitor.config.settings import ConfigError, load_config

        self.ensure_logging()  # a configuration means channels, warnings: code that logs
        try:
            config = load_config(self.config_path, env=self.env, cli_db=self.db_url)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        import structlog

        for warning in config.warnings:
            structlog.get_logger("trialwatch").warning("config.warning", message=warning)
        return config

    @cached_property
    def config_file(self) -> Path | None:
        """``--config``, else ``./trialwatch.toml`` if present, else None (all defaults)."""
        from trialwatch.monitor.config.database_url import config_file_in_use

        return config_file_in_use(self.config_path)

    @cached_property
    def database_url(self) -> str:
        """``--db``, else ``TRIALWATCH_DB``, else the file's ``database.url`` or the default.

        The first two need no configuration file: a command that only reads the database
        (``diff``, ``history``) neither validates ``trialwatch.toml`` nor imports pydantic.
        """
        from trialwatch.monitor.config.database_url import (
            default_database_url,
            normalize_database_url,
            overriding_database_url,
        )

        override = overriding_database_url(self.db_url, self.env)
        if override is None:
            if self.config_file is None:
                return default_database_url()
            return self.config.database.url
        origin, value = override
        try:
            return normalize_database_url(value)
        except ValueError as exc:
            raise CommandError(f"{origin}: database.url: {exc}") from None

    def database(self, *, create_if_empty: bool = True, check_schema: bool = True) -> Database:
        """Open the configured database; migrate it if new, refuse it if outdated."""
        if self._database is None:
            from trialwatch.storage.engine import DatabaseError, open_database
            from trialwatch.storage.schema import SchemaOutdated, ensure_schema

            url = self.database_url
            try:
                db = open_database(url)
                if check_schema:
                    ensure_schema(db, create_if_empty=create_if_empty)
            except (DatabaseError, SchemaOutdated) as exc:
                raise CommandError(mask_database_message(
                    f"database {_safe_url(url)}: {exc}", url)) from None
            except Exception as exc:  # driver errors: server down, bad credentials, ...
                raise database_busy(exc, _safe_url(url)) or CommandError(mask_database_message(
                    f"database {_safe_url(url)}: {_first_line(exc)}", url)) from None
            self._database = db
        return self._database

    @property
    def subscriptions(self) -> list[Any]:
        """The effective subscriptions, once their saved queries are known to exist."""
        self.check_subscription_queries()
        return list(self.config.effective_subscriptions())

    def check_subscription_queries(self) -> None:
        """A subscription's ``queries`` must name saved searches: ``[watch] queries`` or ones
        saved with ``watch --query --name`` (the database); the first unknown one is an error
        naming it."""
        named = [(index, position, name)
                 for index, subscription in enumerate(self.config.subscriptions)
                 for position, name in enumerate(subscription.queries or ())]
        if not named:
            return
        from sqlalchemy import select

        from trialwatch.storage.models import SavedQuery

        known = {query.name for query in self.config.watch.queries}
        with self.database().transaction() as session:
            known.update(session.scalars(select(SavedQuery.name)))
        for index, position, name in named:
            if name not in known:
                saved = ", ".join(sorted(known)) or "none"
                raise CommandError(f"{self.config_label}: subscriptions[{index}].queries"
                                   f"[{position}]: unknown saved query {name!r} "
                                   f"(saved queries: {saved})")

    def check_configuration(self) -> None:
        """Everything other commands would reject, without reading secrets: the file, every
        channel's type and settings, the saved queries subscriptions name."""
        if self.config_file is None:  # every default: nothing that could be wrong
            return
        if self.config.channels:
            from trialwatch.notifiers.base import ConfigurationError
            from trialwatch.notifiers.registry import check_channels

            try:
                check_channels({name: {"type": c.type, **c.settings}
                                for name, c in self.config.channels.items()})
            except ConfigurationError as exc:
                raise CommandError(f"{self.config_label}: {exc}") from None
        self.check_subscription_queries()

    @cached_property
    def channels(self) -> dict[str, Notifier]:
        """Every ``[channels.X]`` built into its notifier (config errors name the key)."""
        from trialwatch.notifiers.base import ConfigurationError
        from trialwatch.notifiers.registry import build_channels

        tables = {name: {"type": c.type, **c.settings}
                  for name, c in self.config.channels.items()}
        try:
            return build_channels(tables, self.env)
        except ConfigurationError as exc:
            raise CommandError(f"{self.config_label}: {exc}") from None

    @property
    def config_label(self) -> str:
        source = self.config.source
        return str(source) if source else "configuration"

    @property
    def delivery_policy(self) -> DeliveryPolicy:
        from trialwatch.monitor.health import system_channels
        from trialwatch.notifiers.outbox import DeliveryPolicy

        delivery = self.config.delivery
        return DeliveryPolicy(max_attempts=delivery.max_attempts, backoff=delivery.backoff,
                              max_backoff=delivery.max_backoff,
                              failing_after=self.config.alerts.failing_after,
                              system_channels=system_channels(
                                  self.config.effective_subscriptions()))

    def deliver_pending(self) -> DeliveryReport | None:
        """Queue the digests that are due, then deliver due alerts once, as the daemon
        would; failures stay in the outbox."""
        if not self.config.channels:
            return None
        from trialwatch.notifiers.outbox import deliver_due

        try:
            self.send_digests()
        except CommandError:
            raise
        except Exception as exc:  # a database fault: alerts still go; the next pass retries
            import structlog

            structlog.get_logger("trialwatch").error(
                "digests.crashed", error_type=type(exc).__name__,
                error=" ".join(str(exc).split())[:500])

        return deliver_due(self.database(), self.channels, self.delivery_policy,
                           base_url=self.config.web.base_url)

    def send_digests(self, *, force: bool = False, channel: str | None = None,
                     now: datetime | None = None) -> DigestReport | None:
        """Queue the due digests (every one not already pending, with ``force``) in the
        outbox; None when no subscription has ``digest``. ``deliver_pending`` sends them."""
        from trialwatch.monitor.digests import digest_subscriptions, send_due_digests

        config = self.config
        subscriptions = digest_subscriptions(config.effective_subscriptions(), channel)
        if not subscriptions:
            return None
        return send_due_digests(self.database(), subscriptions, config.schedule.tzinfo,
                                now=now or datetime.now(UTC), force=force,
                                base_url=config.web.base_url)

    def registry_client(self, **options: Any) -> RegistryClient:
        """The configured client; ``options`` (e.g. the daemon's ``transport``, ``sleep``)
        are passed through to ``RegistryClient``."""
        from trialwatch.monitor.sources.ctgov.client import RegistryClient

        ctgov = self.config.ctgov
        return RegistryClient(str(ctgov.base_url).rstrip("/"),
                              requests_per_second=ctgov.requests_per_second,
                              timeout=ctgov.timeout.total_seconds(),
                              max_retries=ctgov.max_retries,
                              max_url_length=ctgov.max_url_length,
                              max_response_size=ctgov.max_response_size, **options)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return mask_url_passwords(url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
