"""Read record files from disk: API v2 study JSON, API v2 list pages, rendered text pages.

This is the I/O edge of the parsers: ``read_record_file`` checks the file (exists, regular,
not empty, not binary, UTF-8, at most 50 MB), sniffs the format (first non-whitespace
character ``{`` or ``[`` means JSON) and hands the content to ``parse_study`` or
``parse_text_page``. ``iter_record_paths`` expands folders. Every failure is a
``ParseError`` whose message names the problem; callers prefix the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from trialwatch.monitor.record import ParseError, TrialRecord
from trialwatch.monitor.sources.ctgov.parser import iter_page_studies, parse_study
from trialwatch.monitor.sources.text_page import parse_text_page

__all__ = [
    "MAX_FILE_BYTES",
    "RECORD_SUFFIXES",
    "ParsedDocument",
    "iter_record_paths",
    "parse_record_bytes",
    "read_record_file",
]

MAX_FILE_BYTES = 50 * 1024 * 1024
RECORD_SUFFIXES = (".json", ".txt")

DocumentFormat = Literal["ctgov-json", "text-page"]


@dataclass(frozen=True)
class ParsedDocument:
    """One parsed record and the raw document it came from.

    ``raw`` is the bytes to store beside the record: the whole file for a single study or a
    text page, the study's own JSON for one study of a list page. ``origin`` names where it
    came from: the path, plus ``#studies[i]`` for a study of a list page.
    """

    record: TrialRecord
    raw: bytes
    format: DocumentFormat
    origin: str


def read_record_file(path: Path) -> list[ParsedDocument]:
    """Parse a record file: a JSON study gives one document, a JSON page one per study."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ParseError("file does not exist") from None
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ParseError("is a directory, expected a record file")
    if not path.is_file():
        raise ParseError("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ParseError(f"file is larger than 50 MB ({info.st_size} bytes)")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ParseError("file is larger than 50 MB")
    return parse_record_bytes(data, str(path))


def parse_record_bytes(data: bytes, origin: str) -> list[ParsedDocument]:
    """Parse the content of a record file (the same checks as ``read_record_file``)."""
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"file is larger than 50 MB ({len(data)} bytes)")
    if not data.strip():
        raise ParseError("empty file")
    if b"\x00" in data:
        raise ParseError("binary file (contains NUL bytes), expected JSON or a text page")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"invalid UTF-8 at byte {exc.start}") from None
    text = text.removeprefix("\ufeff")
    body = text.lstrip()
    if not body:
        raise ParseError("empty file")
    if body[0] in "{[":
        return _parse_json(text, data, origin)
    return [ParsedDocument(parse_text_page(text), data, "text-page", origin)]


def _parse_json(text: str, data: bytes, origin: str) -> list[ParsedDocument]:
    try:
        doc: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ParseError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        ) from None
    if isinstance(doc, Mapping) and "protocolSection" in doc:
        return [ParsedDocument(parse_study(doc), data, "ctgov-json", origin)]
    if isinstance(doc, Mapping) and "studies" in doc:
        studies: Iterable[Any] = iter_page_studies(doc)
    elif isinstance(doc, list):
        studies = doc
    else:
        raise ParseError(
            "JSON is not a ClinicalTrials.gov study or study page "
            "(no protocolSection or studies key)"
        )
    parsed: list[ParsedDocument] = []
    for i, study in enumerate(studies):
        try:
            record = parse_study(study)
        except ParseError as exc:
            raise ParseError(f"studies[{i}]: {exc}") from None
        parsed.append(ParsedDocument(record, orjson.dumps(study), "ctgov-json",
                                     f"{origin}#studies[{i}]"))
    return parsed


def iter_record_paths(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Expand folders into their record files (recursive, sorted, ``.json``/``.txt``,
    hidden files and folders skipped); other paths are yielded as given (missing ones too,
    so ``read_record_file`` reports them). Each file is yielded once."""
    seen: set[Path] = set()
    for item in paths:
        path = Path(item)
        candidates = _folder_files(path) if path.is_dir() else [path]
        for candidate in candidates:
            key = _identity(candidate)
            if key not in seen:
                seen.add(key)
                yield candidate


def _identity(path: Path) -> Path:
    """The file ``path`` names, for "once each"; a symlink loop (``ln -s a b; ln -s b a``)
    has none, so it stands for itself and ``read_record_file`` reports it in one line."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # RuntimeError: Python < 3.13's "Symlink loop from ..."
        return Path(os.path.abspath(path))


def _folder_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(root) / name for name in files
            if not name.startswith(".") and name.lower().endswith(RECORD_SUFFIXES)
        )
    return sorted(found)
