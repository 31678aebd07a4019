"""The building blocks of ``trialwatch.monitor.config.settings``: ``ConfigError`` and the value
types.

``ConfigError.from_validation_error`` turns the first error of a pydantic validation into
one line naming the dotted key (``subscriptions[0].kinds[1]``) with a message written for
the person editing the file; notifiers use it for their ``[channels.X]`` settings too.
Validators here raise through ``invalid(message, *deeper_loc)`` so their message is kept
as written. Messages never echo values of keys that may hold secrets.

Value types: ``Duration`` ("6h" → timedelta), ``ByteSize`` ("50MB" → bytes), ``NctId``,
``HttpUrl``, ``DatabaseUrl`` (a bare path becomes an absolute SQLite URL), ``LogLevel``,
``NonEmptyStr``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any, NoReturn, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from trialwatch.monitor.config.database_url import DEFAULT_CONFIG_FILE, normalize_database_url
from trialwatch.monitor.config.durations import format_duration, parse_duration
from trialwatch.monitor.record import NCT_ID_RE

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(Exception):
    """A configuration problem: ``key`` is the dotted key at fault (None for TOML syntax)."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str = DEFAULT_CONFIG_FILE,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message, self.key, self.source = message, key, source
        self.line, self.column = line, column
        where = f"line {line}, column {column}" if line is not None else key
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")

    @classmethod
    def from_validation_error(
        cls,
        error: ValidationError,
        *,
        prefix: str = "",
        source: str = DEFAULT_CONFIG_FILE,
        model: type[BaseModel] | None = None,
    ) -> ConfigError:
        """The first error of a pydantic validation, named by its dotted key under ``prefix``.

        ``model`` (the model validated) lets unknown keys get "did you mean" hints.
        """
        first = error.errors(include_url=False)[0]
        loc = tuple(first["loc"]) + tuple((first.get("ctx") or {}).get("at", ()))
        key = ".".join(part for part in (prefix, format_key(loc)) if part)
        return cls(_describe(first, loc, model), key=key or None, source=source)


def format_key(loc: Iterable[str | int]) -> str:
    """``("subscriptions", 0, "kinds")`` → ``subscriptions[0].kinds`` (odd names quoted)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY_RE.match(part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


def invalid(message: str, *at: str | int) -> NoReturn:
    """Raise a validation error with our own message, optionally deeper by ``at``."""
    raise PydanticCustomError("trialwatch", "{message}", {"message": message, "at": at})


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "bool_type": "true or false", "list_type": "an array",
    "tuple_type": "an array", "dict_type": "a table", "model_type": "a table",
    "model_attributes_type": "a table",
}


def _describe(error: Any, loc: tuple[Any, ...], model: type[BaseModel] | None) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "trialwatch":
        return str(error["msg"])
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return f"unknown key (known keys: {', '.join(sorted(known))})" if known else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_toml_type(value)}"
    if kind == "literal_error":
        return f"invalid value {value!r} (use {error['ctx']['expected']})"
    message = str(error["msg"]).replace("Input should be", "must be")
    if isinstance(value, int | float) and not isinstance(value, bool):
        message += f", got {value}"  # numbers only: a string might be a secret
    return message


def _known_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``loc`` of ``model`` accepts, for "did you mean" hints."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


# --- value types -------------------------------------------------------------------------


def _duration(value: object) -> timedelta:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except ValueError as exc:
        invalid(str(exc))


def _nct_id(value: object) -> object:
    if isinstance(value, str):
        normalized = value.strip().upper()
        if not NCT_ID_RE.match(normalized):
            invalid(f"invalid NCT ID {value!r} (expected NCT followed by 8 digits)")
        return normalized
    return value  # not a string: the str type reports it


def _http_url(value: object) -> object:
    if isinstance(value, str):
        if not re.match(r"^https?://[^\s/]+", value):
            invalid(f"invalid URL {value!r} (expected http:// or https://)")
        return value.rstrip("/")
    return value


def _database_url(value: object) -> object:
    """A URL passes; a bare file path (``--db ./x.db``) becomes an absolute SQLite URL."""
    if not isinstance(value, str):
        return value
    try:
        return normalize_database_url(value)
    except ValueError as exc:
        invalid(str(exc))


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _byte_size(value: object) -> object:
    """``"50MB"``, ``"512 KB"``, ``"1GB"`` or a whole number of bytes."""
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            invalid(f"invalid size {value!r} (expected e.g. \"50MB\", \"512KB\" or bytes)")
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()]
    return value  # an integer (or a wrong type: the int type reports it)


def _log_level(value: object) -> object:
    if isinstance(value, str):
        level = value.strip().lower()
        level = "warning" if level == "warn" else level
        if level not in LOG_LEVELS:
            invalid(f"unknown log level {value!r} (use {', '.join(LOG_LEVELS)})")
        return level
    return value


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, when_used="json")
]
NctId = Annotated[StrictStr, BeforeValidator(_nct_id)]
HttpUrl = Annotated[StrictStr, BeforeValidator(_http_url)]
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
DatabaseUrl = Annotated[StrictStr, BeforeValidator(_database_url)]
LogLevel = Annotated[StrictStr, BeforeValidator(_log_level)]
ByteSize = Annotated[StrictInt, BeforeValidator(_byte_size), Field(ge=1024)]
