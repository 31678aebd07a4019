"""Which notifier types exist, and building a channel from its ``[channels.X]`` table.

Built-ins (``apprise``, ``console``, ``email``, ``webhook``; ``apprise`` needs the extra
``trialwatch[apprise]`` only when a channel uses it) plus classes published by other
distributions under the entry-point group ``trialwatch.notifiers``::

    [project.entry-points."trialwatch.notifiers"]
    teams = "trialwatch_teams:TeamsNotifier"     # the class's ``name`` must be "teams"

A plugin that fails to import, or does not look like a notifier, does not break the others:
it is reported as a ``PluginLoadError`` naming the entry point (``describe_notifiers``, and
``build_channel`` when a channel asks for that type). Nothing is cached: each call reads the
installed entry points afresh.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from trialwatch.notifiers.apprise import AppriseNotifier
from trialwatch.notifiers.base import ConfigurationError, Notifier
from trialwatch.notifiers.console import ConsoleNotifier
from trialwatch.notifiers.email import EmailNotifier
from trialwatch.notifiers.webhook import WebhookNotifier

ENTRY_POINT_GROUP = "trialwatch.notifiers"

BUILTINS: Mapping[str, type[Notifier]] = MappingProxyType(
    {cls.name: cls for cls in (AppriseNotifier, ConsoleNotifier, EmailNotifier, WebhookNotifier)}
)


class PluginLoadError(Exception):
    """A ``trialwatch.notifiers`` entry point that could not be used."""

    def __init__(self, entry_point: metadata.EntryPoint, reason: str) -> None:
        super().__init__(entry_point.name, reason)
        self.name = entry_point.name
        self.value = entry_point.value
        self.distribution = _distribution(entry_point)
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"notifier plugin {self.name!r} (entry point '{self.name} = {self.value}' in group "
            f"{ENTRY_POINT_GROUP}, from {self.distribution}) failed to load: {self.reason}"
        )


@dataclass(frozen=True)
class Discovery:
    """The usable notifier classes by type name, and the plugins that could not be loaded."""

    notifiers: Mapping[str, type[Notifier]]
    errors: tuple[PluginLoadError, ...] = ()


class NotifierInfo(NamedTuple):
    """One line of ``describe_notifiers()``: type name, docstring summary, where it is from."""

    name: str
    description: str
    source: str


def _distribution(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _not_a_notifier(obj: object, type_name: str) -> str | None:
    """Why ``obj`` cannot serve as notifier type ``type_name``, or None if it can."""
    if not isinstance(obj, type):
        return f"{obj!r} is not a class"
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        return f"{obj.__qualname__} has no class attribute 'name'"
    if name != type_name:
        return f"{obj.__qualname__}.name is {name!r}, expected {type_name!r} (the entry point name)"
    config = getattr(obj, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        return f"{obj.__qualname__}.Config is not a pydantic model (subclass NotifierConfig)"
    if not callable(getattr(obj, "send", None)):
        return f"{obj.__qualname__} has no send(alert) method"
    return None


def discover_notifiers() -> Discovery:
    """Built-ins plus every loadable entry point of group ``trialwatch.notifiers``."""
    found: dict[str, type[Notifier]] = dict(BUILTINS)
    origin: dict[str, str] = {name: _class_path(cls) for name, cls in BUILTINS.items()}
    errors: list[PluginLoadError] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if origin.get(ep.name) == ep.value:
            continue  # the built-in itself, or the same plugin seen twice
        if ep.name in found:
            clash = "built-in notifier" if ep.name in BUILTINS else f"plugin '{origin[ep.name]}'"
            errors.append(PluginLoadError(ep, f"type name {ep.name!r} is taken by the {clash}"))
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            errors.append(PluginLoadError(ep, f"{type(exc).__name__}: {exc}"))
            continue
        if (problem := _not_a_notifier(obj, ep.name)) is not None:
            errors.append(PluginLoadError(ep, problem))
            continue
        found[ep.name] = obj
        origin[ep.name] = ep.value
    return Discovery(MappingProxyType(found), tuple(errors))


def available_notifiers(*, strict: bool = False) -> dict[str, type[Notifier]]:
    """Notifier classes by ``type`` name. ``strict``: raise the first ``PluginLoadError``."""
    discovery = discover_notifiers()
    if strict and discovery.errors:
        raise discovery.errors[0]
    return dict(discovery.notifiers)


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else "(no description)"


def describe_notifiers() -> list[NotifierInfo]:
    """Every notifier type with its docstring's first line (``--features``), broken ones too."""
    discovery = discover_notifiers()
    infos = [
        NotifierInfo(
            name,
            _summary(cls),
            "built-in" if name in BUILTINS and BUILTINS[name] is cls else _class_path(cls),
        )
        for name, cls in discovery.notifiers.items()
    ]
    infos += [
        NotifierInfo(err.name, f"unavailable: {err.reason}", err.value)
        for err in discovery.errors
        if err.name not in discovery.notifiers
    ]
    return sorted(infos)


def channel_key(channel_name: str, key: str = "") -> str:
    """``channels.team-mail.port``; names that are not bare TOML keys are quoted."""
    name = channel_name if re.fullmatch(r"[A-Za-z0-9_-]+", channel_name) else f'"{channel_name}"'
    return f"channels.{name}" + (f".{key}" if key else "")


def _error_key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _config_error(prefix: str, model: type[BaseModel], exc: ValidationError) -> ConfigurationError:
    """The first validation error, as ``channels.X.<key>: <reason>``."""
    first = exc.errors(include_url=False)[0]
    key = _error_key(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))
        message = f"unknown key (valid keys: type, {known})"
    elif first["type"] == "missing":
        message = "required key is missing"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
        if str(first["type"]).endswith("_type"):  # name the TOML type given, never the value
            message += f", got {_TOML_TYPES.get(type(first.get('input')), 'another type')}"
    return ConfigurationError(f"{prefix}.{key}" if key else prefix, message)


_TOML_TYPES: Mapping[type, str] = MappingProxyType({
    str: "a string", int: "an integer", float: "a float", bool: "a boolean", list: "an array",
    dict: "a table"})


def _unknown_type(channel_name: str, type_name: str, discovery: Discovery) -> ConfigurationError:
    key = channel_key(channel_name, "type")
    for err in discovery.errors:
        if err.name == type_name and type_name not in discovery.notifiers:
            return ConfigurationError(key, str(err))
    known = ", ".join(sorted(discovery.notifiers))
    return ConfigurationError(key, f"unknown notifier type {type_name!r}; known types: {known}")


def channel_config(
    channel_name: str, table: Mapping[str, Any], *, discovery: Discovery | None = None
) -> tuple[type[Notifier], BaseModel]:
    """Validate ``[channels.<channel_name>]``: its notifier class and validated ``Config``.

    Reads no secrets (``status`` checks a configuration without them). Every problem raises
    ``ConfigurationError`` whose key starts with ``channels.<channel_name>``.
    """
    prefix = channel_key(channel_name)
    if not isinstance(table, Mapping):
        raise ConfigurationError(prefix, "must be a table")
    discovery = discovery if discovery is not None else discover_notifiers()
    type_name = table.get("type")
    if type_name is None:
        known = ", ".join(sorted(discovery.notifiers))
        raise ConfigurationError(channel_key(channel_name, "type"), f"missing; one of: {known}")
    if not isinstance(type_name, str):
        raise ConfigurationError(channel_key(channel_name, "type"), "must be a string")
    cls = discovery.notifiers.get(type_name)
    if cls is None:
        raise _unknown_type(channel_name, type_name, discovery)
    settings = {k: v for k, v in table.items() if k != "type"}
    try:
        return cls, cls.Config.model_validate(settings)
    except ValidationError as exc:
        raise _config_error(prefix, cls.Config, exc) from None


def check_channels(channels: Mapping[str, Mapping[str, Any]]) -> None:
    """``channel_config`` for every ``[channels.*]`` table, scanning entry points once."""
    discovery = discover_notifiers()
    for name, table in channels.items():
        channel_config(name, table, discovery=discovery)


def build_channel(
    channel_name: str,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    discovery: Discovery | None = None,
) -> Notifier:
    """Validate ``[channels.<channel_name>]`` and build its notifier.

    ``type`` picks the class; the rest of the table is its ``Config``; secrets are read from
    ``env``. Every problem raises ``ConfigurationError`` whose key starts with
    ``channels.<channel_name>``. Pass ``discovery`` to build many channels from one scan.
    """
    prefix = channel_key(channel_name)
    cls, config = channel_config(channel_name, table, discovery=discovery)
    try:
        notifier = cls(config, env)
    except ConfigurationError as exc:
        raise exc.with_prefix(prefix) from None
    except Exception as exc:  # a plugin's constructor failing in its own way
        raise ConfigurationError(
            prefix, f"notifier {table.get('type')!r} could not be set up: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return notifier


def build_channels(
    channels: Mapping[str, Mapping[str, Any]], env: Mapping[str, str]
) -> dict[str, Notifier]:
    """``build_channel`` for every ``[channels.*]`` table, scanning entry points once."""
    discovery = discover_notifiers()
    return {
        name: build_channel(name, table, env, discovery=discovery)
        for name, table in channels.items()
    }
