"""What the registry client (``trialwatch.monitor.sources.ctgov.client``) returns and raises.

Results: ``StudyStamp`` (an NCT id with its last-update date and status: what listings give),
``RegistryVersion`` (``/version``), ``FetchedStudy`` (one full document from ``get_study``),
``ChangedSinceListing`` (the registry-wide listing of updates, first page in hand).

Errors, all ``RegistryError`` with ``.url``, ``.status_code`` and a one-line ``.reason``:
``RegistryUnavailable`` (unreachable, or 5xx/429 after the retries), ``RegistryBlocked``
(403 after the retries: the registry refuses *us*; never "record removed"),
``BadRegistryResponse`` (an answer that cannot be trusted as data) and ``TrialNotFound``
(404 for one id). They pickle with every attribute: the fetch workers send them over pipes.
Import them from ``trialwatch.monitor.sources.ctgov.client``, which re-exports all of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class RegistryError(Exception):
    """Base of every registry failure. ``str(e)`` is one line: reason, then the URL."""

    def __init__(self, reason: str, *, url: str | None = None, status_code: int | None = None):
        self.reason = " ".join(reason.split())
        self.url = url
        self.status_code = status_code
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with every attribute (the fetch worker process sends its failures to the
        # cycle), without calling a subclass's own ``__init__``.
        return (_restore_error, (type(self), dict(self.__dict__)))

    def __str__(self) -> str:
        if not self.url:
            return self.reason
        url = self.url if len(self.url) <= 160 else self.url[:157] + "..."
        return f"{self.reason} [{url}]"


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or kept failing (timeouts, 5xx, 429) after retries."""


class RegistryBlocked(RegistryUnavailable):
    """The registry answered 403 after retries: it blocks this client. Says nothing of trials."""


class BadRegistryResponse(RegistryError):
    """The registry answered, but with something that cannot be trusted as data."""


class TrialNotFound(RegistryError):
    """The registry does not know this NCT id (404)."""

    def __init__(self, nct_id: str, reason: str, *, url: str | None = None):
        super().__init__(reason, url=url, status_code=404)
        self.nct_id = nct_id


def _restore_error(cls: type[RegistryError], state: dict[str, Any]) -> RegistryError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["reason"])
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class StudyStamp:
    """A study's identity and its own signal of a new version (``lastUpdatePostDate``).

    ``aliases`` are the record's old NCT ids: the registry answers a ``filter.ids`` request
    for an alias with the current record, so a watched alias maps to ``nct_id`` here.
    ``overall_status`` is listed beside the date because the registry changes a status
    without moving the date (its automatic switch to ``UNKNOWN``); None when not listed.
    """

    nct_id: str
    last_update_posted: str | None
    aliases: tuple[str, ...] = ()
    overall_status: str | None = None


@dataclass(frozen=True)
class RegistryVersion:
    """What ``/version`` says: the API version and when the registry's data was refreshed."""

    api_version: str
    data_timestamp: str


@dataclass(frozen=True)
class FetchedStudy:
    """One full study document from ``get_study``.

    ``alias_of`` is set when ``requested_id`` is an old (alias) id: it is the current id the
    registry redirected to, equal to ``nct_id``. It is None when the id was asked directly.
    """

    requested_id: str
    nct_id: str
    document: dict[str, Any]
    alias_of: str | None = None


@dataclass(frozen=True)
class ChangedSinceListing:
    """The registry-wide listing of studies updated since a date, its first page fetched.

    That page was asked with ``countTotal=true``: ``total`` and ``requests`` (the whole
    listing's, that first one included) say what the rest costs before it is paid for.
    Iterate for every stamp; the later pages are requested as they are reached.
    """

    total: int
    requests: int
    stamps: Iterator[StudyStamp]

    def __iter__(self) -> Iterator[StudyStamp]:
        return self.stamps

    def cheaper_than(self, requests: int) -> bool:
        """Whether finishing this listing costs no more than another listing of ``requests``
        requests would (its first page is paid for already)."""
        return self.requests - 1 <= requests
