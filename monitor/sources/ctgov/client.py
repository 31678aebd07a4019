"""The ClinicalTrials.gov API v2 client: batched, rate-limited, retried, and strict about answers.

One class, ``RegistryClient``, with typed results and its own exception tree::

    with RegistryClient() as registry:
        for stamp in registry.iter_stamps(watched_ids):        # NCT id + last-update date
            ...
        for document in registry.iter_studies(changed_ids):   # full API v2 documents
            ...

Listing asks for ``fields=NCTId,NCTIdAlias,LastUpdatePostDate,OverallStatus`` with
``filter.ids`` (the status too: the registry changes some without moving the date); each
request carries at most ``page_size`` ids *and* keeps its URL under ``max_url_length``
characters (an NCT id costs 12 characters, so ~600 ids fit in 7,500). ``listing_requests()``
tells a caller how many requests a listing costs, to compare with what ``changed_since()``
(the registry-wide listing of updates, its first page already in hand) says it costs.

Errors (all ``RegistryError``, each with ``.url`` and a one-line ``.reason``; they and the
result types are defined in ``trialwatch.monitor.sources.ctgov.types`` and re-exported here):

* ``RegistryUnavailable`` - connection error, timeout, 5xx or 429 that outlasted the retries;
* ``RegistryBlocked`` - 403 that outlasted the retries: the registry refuses *us*, it says
  nothing about any trial, so it must never be read as "record removed";
* ``BadRegistryResponse`` - an answer that cannot be trusted: HTML or empty body, invalid or
  truncated JSON, no ``studies`` list, a study without an NCT id, a 400 (its text included);
* ``TrialNotFound`` - 404 for a single id.

A bad page is raised, never skipped: no caller can mistake a bad answer for "no studies".
Every answer is read streamed, at most ``max_response_size`` bytes (default 50 MB, after
decompression): a longer one is a ``BadRegistryResponse`` and what was read is dropped, so
memory stays bounded whatever the registry (or a proxy) sends.
A study whose NCT id was not asked for (nor is an alias of one asked for) is skipped and logged.
"""

from __future__ import annotations

import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
import structlog

from trialwatch.monitor import __version__
from trialwatch.monitor.sources.ctgov.ratelimit import RateLimiter
from trialwatch.monitor.sources.ctgov.types import (
    BadRegistryResponse,
    ChangedSinceListing,
    FetchedStudy,
    RegistryBlocked,
    RegistryError,
    RegistryUnavailable,
    RegistryVersion,
    StudyStamp,
    TrialNotFound,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "BadRegistryResponse",
    "ChangedSinceListing",
    "FetchedStudy",
    "RegistryBlocked",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "RegistryVersion",
    "StudyStamp",
    "TrialNotFound",
]

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://clinicaltrials.gov/api/v2"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = f"trialwatch/{__version__} (+https://github.com/trialwatch/trialwatch)"
MAX_PAGE_SIZE = 1000
STUDY_PAGE_SIZE = 100  # full documents run from 10 KB to 400 KB each
MAX_URL_LENGTH = 7500
PAGE_TOKEN_ROOM = 200  # URL length kept free for the pageToken of follow-up pages
MAX_RETRY_DELAY = 60.0
STAMP_FIELDS = "NCTId,NCTIdAlias,LastUpdatePostDate,OverallStatus"
DEFAULT_MAX_RESPONSE_SIZE = 50 * 1024 * 1024  # bytes of one answer, decompressed
NCT_ID_RE = re.compile(r"^NCT\d{8}$")
RETRY_STATUSES = frozenset({403, 429, 500, 502, 503, 504})


class RegistryClient:
    """Client for the ClinicalTrials.gov API v2. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        requests_per_second: float = 1.0,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        backoff: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
        max_url_length: int = MAX_URL_LENGTH,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # What ``clone()`` needs and no attribute below keeps.
        self._connection: dict[str, Any] = dict(
            timeout=timeout, transport=transport, user_agent=user_agent, clock=clock)
        self.base_url = base_url.rstrip("/")
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.max_url_length = max_url_length
        self.max_response_size = max(1, max_response_size)
        self.requests_made = 0
        self._sleep = sleep
        self._limiter = RateLimiter(requests_per_second, clock=clock, sleep=sleep)
        self._random = random.Random()
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            headers={"User-Agent": user_agent or USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def requests_per_second(self) -> float:
        """The client-side rate limit (0 or less: none)."""
        return self._limiter.rate

    @property
    def has_custom_transport(self) -> bool:
        return self._connection["transport"] is not None

    def clone(self) -> RegistryClient:
        """A client with the same settings and its own connection pool, whose rate limit
        continues from this one's (see ``note_requests_elsewhere`` for the way back). For a
        forked worker process: the default transport is safe to clone, a custom one is shared.
        """
        twin = RegistryClient(
            self.base_url, requests_per_second=self.requests_per_second,
            max_retries=self.max_retries, backoff=self.backoff,
            max_url_length=self.max_url_length, max_response_size=self.max_response_size,
            sleep=self._sleep, **self._connection)
        twin._limiter = self._limiter.copy()
        return twin

    def note_requests_elsewhere(self, count: int) -> None:
        """Count ``count`` requests a clone made on this client's behalf, the last just now."""
        self.requests_made += count
        if count:
            self._limiter.note_request()

    # ----------------------------------------------------------------- public API

    def version(self) -> RegistryVersion:
        """The API version and the timestamp of the registry's current data."""
        url, body = self._get_json(f"{self.base_url}/version", {})
        api_version, stamp = body.get("apiVersion"), body.get("dataTimestamp")
        if not isinstance(api_version, str) or not isinstance(stamp, str):
            raise BadRegistryResponse("version answer without apiVersion/dataTimestamp", url=url)
        return RegistryVersion(api_version=api_version, data_timestamp=stamp)

    def iter_stamps(
        self, nct_ids: Sequence[str], *, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[StudyStamp]:
        """Stamps (NCT id, last-update date) of the given trials, batched through filter.ids.

        Ids the registry does not return are simply absent; that alone is not a removal.
        """
        batches = self._id_batches(nct_ids, page_size, STAMP_FIELDS)
        return (_stamp(study, url) for study, url in self._iter_batches(batches))

    def iter_studies(
        self, nct_ids: Sequence[str], *, page_size: int = STUDY_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """Full API v2 documents of the given trials, batched through filter.ids."""
        batches = self._id_batches(nct_ids, page_size, None)
        return (study for study, _url in self._iter_batches(batches))

    def search_stamps(
        self,
        term: str | None = None,
        condition: str | None = None,
        *,
        updated_since: date | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[StudyStamp]:
        """Stamps of every study matching a saved query (``query.term`` / ``query.cond``).

        The first page is asked with ``countTotal=true`` (one request, now) and the listing
        must deliver exactly that many studies: an answer that is a valid page but without
        the studies (or cut short) would otherwise read as "no new matches", the query's
        run would count as good and the matches it hid would never be looked for again.
        """
        if not term and not condition and updated_since is None:
            raise ValueError("a search needs a term, a condition or updated_since")
        params = {"fields": STAMP_FIELDS, "pageSize": str(_page_size(page_size))}
        if term:
            params["query.term"] = term
        if condition:
            params["query.cond"] = condition
        if updated_since is not None:
            params["filter.advanced"] = _updated_since(updated_since)
        url, body = self._get_page({**params, "countTotal": "true"})
        total = _total_count(body, url)
        return _counted((_stamp(study, page) for study, page in
                         self._iter_pages(params, first=(url, body))), total, url)

    def changed_since(
        self, since: date, *, page_size: int = MAX_PAGE_SIZE
    ) -> ChangedSinceListing:
        """Every study in the registry whose last update was posted on/after ``since``.

        One request now: the first page, with ``countTotal=true`` (the API allows it on the
        first page only); the rest as the listing is iterated.
        """
        page_size = _page_size(page_size)
        params = {"fields": STAMP_FIELDS, "pageSize": str(page_size),
                  "filter.advanced": _updated_since(since)}
        url, body = self._get_page({**params, "countTotal": "true"})
        total = _total_count(body, url)
        pages = self._iter_pages(params, first=(url, body))
        return ChangedSinceListing(total, max(1, -(-total // page_size)),
                                   (_stamp(study, url) for study, url in pages))

    def switched_status(self, status: str, verified_since: date, *,
                        page_size: int = MAX_PAGE_SIZE) -> Iterator[StudyStamp]:
        """Every study now in ``status`` whose status was last verified on/after
        ``verified_since``: how to find the registry's own status switches (its automatic
        ``UNKNOWN`` two years after the last verification), which move no update date."""
        params = {"fields": STAMP_FIELDS, "pageSize": str(_page_size(page_size)),
                  "filter.advanced": f"AREA[OverallStatus]{status} AND "
                                     f"AREA[StatusVerifiedDate]RANGE[{verified_since:%Y-%m-%d},MAX]"}
        return (_stamp(study, url) for study, url in self._iter_pages(params))

    def listing_requests(self, count: int, *, page_size: int = MAX_PAGE_SIZE) -> int:
        """How many requests ``iter_stamps`` needs for ``count`` distinct ids (one page each)."""
        return -(-count // self.ids_per_listing_request(page_size=page_size))

    def ids_per_listing_request(self, *, page_size: int = MAX_PAGE_SIZE) -> int:
        """How many ids one ``iter_stamps`` request carries (its page, its URL limit)."""
        return self._ids_per_request(_page_size(page_size), STAMP_FIELDS)

    def get_study(self, nct_id: str) -> FetchedStudy:
        """One full study. An alias id is followed (once) to the current record."""
        _check_ids([nct_id])
        url = f"{self.base_url}/studies/{nct_id}"
        response = self._send(url, {"format": "json"})
        alias_of = None
        if response.status_code in (301, 302, 307, 308):
            alias_of = self._redirect_target(response)
            log.info("ctgov.alias", requested=nct_id, current=alias_of)
            url = f"{self.base_url}/studies/{alias_of}"
            response = self._send(url, {"format": "json"})
            if response.status_code in (301, 302, 307, 308):
                raise BadRegistryResponse("alias redirected more than once", url=str(response.url))
        if response.status_code == 404:
            reason = f"{nct_id} not found" + (f" (alias of {alias_of})" if alias_of else "")
            raise TrialNotFound(nct_id, reason, url=str(response.url))
        url, document = self._parse_json(response)
        current, aliases = _study_ids(document, url)
        if alias_of is None and current != nct_id:
            if nct_id not in aliases:
                raise BadRegistryResponse(f"asked for {nct_id}, got {current}", url=url)
            alias_of = current
        elif alias_of is not None and current != alias_of:
            raise BadRegistryResponse(f"redirected to {alias_of}, got {current}", url=url)
        return FetchedStudy(nct_id, current, document, alias_of)

    # ----------------------------------------------------------------- batching and paging

    def _id_batches(
        self, nct_ids: Sequence[str], page_size: int, fields: str | None
    ) -> list[dict[str, str]]:
        """The params of each filter.ids request (checked now, not at the first ``next()``)."""
        wanted = list(dict.fromkeys(nct_ids))
        _check_ids(wanted)
        page_size = _page_size(page_size)
        per_request = self._ids_per_request(page_size, fields)
        batches = []
        for start in range(0, len(wanted), per_request):
            params = {
                "filter.ids": ",".join(wanted[start : start + per_request]),
                "pageSize": str(page_size),
            }
            if fields:
                params["fields"] = fields
            batches.append(params)
        return batches

    def _iter_batches(self, batches: list[dict[str, str]]) -> Iterator[tuple[dict[str, Any], str]]:
        """Studies of each batch, each once, only those asked for (or asked by an alias)."""
        seen: set[str] = set()
        for params in batches:
            asked = set(params["filter.ids"].split(","))
            for study, url in self._iter_pages(params):
                nct_id, aliases = _study_ids(study, url)
                if nct_id in seen:
                    continue
                if nct_id not in asked and asked.isdisjoint(aliases):
                    log.warning("ctgov.unasked_study", nct_id=nct_id, url=_short(url))
                    continue
                seen.add(nct_id)
                yield study, url

    def _ids_per_request(self, page_size: int, fields: str | None) -> int:
        """Most ids one request can carry: ``page_size``, and the URL within its limit."""
        params = {"filter.ids": "", "pageSize": str(page_size), "format": "json"}
        if fields:
            params["fields"] = fields
        overhead = len(_url(f"{self.base_url}/studies", params)) + PAGE_TOKEN_ROOM
        room = self.max_url_length - overhead
        if room < 11:
            raise ValueError(f"max_url_length {self.max_url_length} leaves no room for ids")
        return max(1, min(page_size, (room + 1) // 12))  # "NCT01234567" + ","

    def _iter_pages(self, params: Mapping[str, str],
                    first: tuple[str, dict[str, Any]] | None = None
                    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Every study of a listing, following nextPageToken; stops on an empty page.
        ``first``: the listing's first page (url, body), already fetched."""
        token: str | None = None
        tokens: set[str] = set()
        while True:
            page_params = dict(params)
            if token is not None:
                page_params["pageToken"] = token
            if first is not None:
                (url, body), first = first, None
            else:
                url, body = self._get_page(page_params)
            studies = body["studies"]
            for study in studies:
                yield study, url
            token = body.get("nextPageToken")
            if not studies or not token:
                return
            if token in tokens:
                raise BadRegistryResponse("the registry repeated a page token", url=url)
            tokens.add(token)

    def _get_page(self, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        url, body = self._get_json(f"{self.base_url}/studies", params)
        if not isinstance(body.get("studies"), list):
            raise BadRegistryResponse("JSON without a 'studies' list", url=url)
        token = body.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            raise BadRegistryResponse("nextPageToken is not a string", url=url)
        return url, body

    # ----------------------------------------------------------------- HTTP

    def _get_json(self, url: str, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        response = self._send(url, {**params, "format": "json"} if params else params)
        return self._parse_json(response)

    def _parse_json(self, response: httpx.Response) -> tuple[str, dict[str, Any]]:
        url = str(response.url)
        status = response.status_code
        if status == 400:
            text = " ".join(response.text.split())[:300] or "(no text)"
            raise BadRegistryResponse(
                f"registry rejected the request: {text}", url=url, status_code=400
            )
        if status != 200:
            raise BadRegistryResponse(f"unexpected HTTP {status}", url=url, status_code=status)
        content = response.content
        head = content.lstrip()[:1]
        content_type = response.headers.get("content-type", "").lower()
        if not head:
            raise BadRegistryResponse("empty response body", url=url, status_code=status)
        if head == b"<" or "html" in content_type:
            raise BadRegistryResponse("expected JSON, got HTML", url=url, status_code=status)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise BadRegistryResponse(
                f"invalid or truncated JSON: {exc}", url=url, status_code=status
            ) from exc
        if not isinstance(body, dict):
            raise BadRegistryResponse("expected a JSON object", url=url, status_code=status)
        return url, body

    def _send(self, url: str, params: Mapping[str, str]) -> httpx.Response:
        """GET with rate limiting and retries; returns any non-retryable response."""
        full_url = _url(url, params)
        attempt = 0
        while True:
            self._limiter.acquire()
            self.requests_made += 1
            started = time.perf_counter()
            retry_after: float | None = None
            status: int | None = None
            try:
                response = self._get_capped(full_url)
            except httpx.UnsupportedProtocol as exc:
                raise RegistryUnavailable(f"cannot connect: {exc}", url=full_url) from exc
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection failed: {str(exc) or type(exc).__name__}"
            else:
                status = response.status_code
                log.debug(
                    "ctgov.request",
                    url=url,
                    params=_loggable(params),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
                if status not in RETRY_STATUSES:
                    return response
                problem = f"HTTP {status}"
                retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt >= self.max_retries:
                error = RegistryBlocked if status == 403 else RegistryUnavailable
                what = "blocked by the registry" if status == 403 else "registry unavailable"
                raise error(
                    f"{what}: {problem} after {attempt + 1} attempts",
                    url=full_url,
                    status_code=status,
                )
            delay = self._retry_delay(attempt, retry_after)
            attempt += 1
            log.warning(
                "ctgov.retry", url=url, problem=problem, attempt=attempt, delay_s=round(delay, 3)
            )
            self._sleep(delay)

    def _get_capped(self, url: str) -> httpx.Response:
        """GET, the body read streamed and refused past ``max_response_size`` bytes (a
        declared ``Content-Length`` over it is refused before reading anything)."""
        cap = self.max_response_size
        with self._http.stream("GET", url) as response:
            declared = response.headers.get("content-length", "")
            too_big = f"answer larger than the {_size(cap)} limit (ctgov.max_response_size)"
            if declared.isdigit() and int(declared) > cap and "content-encoding" not in \
                    response.headers:
                raise BadRegistryResponse(too_big, url=url, status_code=response.status_code)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    chunks.clear()
                    raise BadRegistryResponse(too_big, url=url,
                                              status_code=response.status_code)
                chunks.append(chunk)
        # the body is decoded already: the answer no longer carries its transfer encodings
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length",
                                        "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks),
                              request=response.request)

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the registry gave one, else exponential backoff with jitter."""
        if retry_after is not None:
            return min(MAX_RETRY_DELAY, retry_after)
        ceiling = min(MAX_RETRY_DELAY, self.backoff * 2**attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _redirect_target(self, response: httpx.Response) -> str:
        location = response.headers.get("location", "")
        target = response.url.join(location)
        match = re.search(r"/studies/(NCT\d{8})/?$", target.path)
        if not location or target.host != response.url.host or match is None:
            raise BadRegistryResponse(
                f"redirect to an unexpected place: {location!r}",
                url=str(response.url),
                status_code=response.status_code,
            )
        return match.group(1)


# --------------------------------------------------------------------- pure helpers


def _url(url: str, params: Mapping[str, str]) -> str:
    """The request URL; commas stay literal (an NCT id list costs 12 characters an id)."""
    return f"{url}?{urllib.parse.urlencode(params, safe=',')}" if params else url


def _size(count: int) -> str:
    """A byte count as people write it (``50 MB``, ``512 KB``, ``100 bytes``)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


def _check_ids(nct_ids: Iterable[str]) -> None:
    bad = [nct_id for nct_id in nct_ids if not NCT_ID_RE.match(nct_id)]
    if bad:
        raise ValueError(f"not NCT ids: {', '.join(map(repr, bad[:5]))}")


def _page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def _updated_since(since: date) -> str:
    return f"AREA[LastUpdatePostDate]RANGE[{since:%Y-%m-%d},MAX]"


def _study_ids(study: object, url: str) -> tuple[str, tuple[str, ...]]:
    """The study's NCT id and aliases; a study without a valid NCT id spoils its page."""
    ident = _dig(study, "protocolSection", "identificationModule")
    nct_id = ident.get("nctId") if isinstance(ident, dict) else None
    if not isinstance(nct_id, str) or not NCT_ID_RE.match(nct_id):
        raise BadRegistryResponse(f"a study without a valid NCT id ({nct_id!r})", url=url)
    aliases = ident.get("nctIdAliases") if isinstance(ident, dict) else None
    if not isinstance(aliases, list):
        return nct_id, ()
    return nct_id, tuple(a for a in aliases if isinstance(a, str))


def _stamp(study: dict[str, Any], url: str) -> StudyStamp:
    nct_id, aliases = _study_ids(study, url)
    posted = _dig(study, "protocolSection", "statusModule", "lastUpdatePostDateStruct", "date")
    if posted is not None and not isinstance(posted, str):
        raise BadRegistryResponse(f"{nct_id}: lastUpdatePostDate is not a string", url=url)
    status = _dig(study, "protocolSection", "statusModule", "overallStatus")
    return StudyStamp(nct_id, posted, aliases, status if isinstance(status, str) else None)


def _dig(value: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _loggable(params: Mapping[str, str]) -> dict[str, str]:
    """Params for a log line, with a long id list shortened to its size."""
    shown = dict(params)
    ids = shown.get("filter.ids")
    if ids and len(ids) > 60:
        shown["filter.ids"] = f"{ids[:23]},... ({ids.count(',') + 1} ids)"
    return shown


def _short(url: str) -> str:
    return url if len(url) <= 160 else url[:157] + "..."


def _total_count(body: Mapping[str, Any], url: str) -> int:
    """The ``totalCount`` of a first page asked with ``countTotal=true``."""
    total = body.get("totalCount")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise BadRegistryResponse("page without a valid totalCount", url=url)
    return total


def _counted(stamps: Iterator[StudyStamp], total: int, url: str) -> Iterator[StudyStamp]:
    """``stamps``, then an error if there were not ``total`` of them."""
    count = 0
    for stamp in stamps:
        count += 1
        yield stamp
    if count != total:
        raise BadRegistryResponse(f"the listing gave {count} of the {total} studies it counted",
                                  url=url)
