"""A fake ClinicalTrials.gov API v2 on a real local HTTP server, for tests and benchmarks.

``FakeRegistry`` serves ``/api/v2/studies`` (filter.ids, fields, pageSize, pageToken,
countTotal, query.term, query.cond, filter.advanced on LastUpdatePostDate),
``/api/v2/studies/{id}`` (301 for an alias, 404 when unknown) and ``/api/v2/version`` from
a stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port chosen by the OS::

    with FakeRegistry() as registry:
        registry.add(make_study(load_fixture("NCT03934567.json"), "NCT00000001", "2026-11-20"))
        registry.fail_next(Fault(status=503), Fault.html())   # the next two requests fail
        client = RegistryClient(registry.base_url, requests_per_second=0)
        ...
        assert len(registry.requests_to("/studies")) == 1

``studies`` and ``aliases`` are plain dicts: change them between cycles. ``fault_plan`` is a
queue consumed one entry per request (``None`` = answer normally); ``fault_hook``, when set,
is asked first for every request. Every request is logged in ``requests`` (path, params,
headers). Outside pytest (benchmarks) put ``tests/`` on ``sys.path`` and import it the same way.
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

KNOWN_PARAMS = frozenset(
    {
        "format",
        "fields",
        "pageSize",
        "pageToken",
        "countTotal",
        "query.term",
        "query.cond",
        "filter.ids",
        "filter.advanced",
        "sort",
        "markupFormat",
    }
)
# fields= names the fake can project, and where each lives in a document.
FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "NCTId": ("protocolSection", "identificationModule", "nctId"),
    "NCTIdAlias": ("protocolSection", "identificationModule", "nctIdAliases"),
    "BriefTitle": ("protocolSection", "identificationModule", "briefTitle"),
    "OfficialTitle": ("protocolSection", "identificationModule", "officialTitle"),
    "OverallStatus": ("protocolSection", "statusModule", "overallStatus"),
    "LastUpdatePostDate": ("protocolSection", "statusModule", "lastUpdatePostDateStruct"),
    "Condition": ("protocolSection", "conditionsModule", "conditions"),
    "Keyword": ("protocolSection", "conditionsModule", "keywords"),
    "HasResults": ("hasResults",),
}
RANGE_RE = re.compile(r"^AREA\[LastUpdatePostDate\]RANGE\[([^,\]]+),([^,\]]+)\]$")
# ``AREA[OverallStatus]UNKNOWN AND AREA[StatusVerifiedDate]RANGE[2024-01-01,MAX]``: the
# trials the registry switched to a status lately (how a changed-since cycle finds them).
STATUS_RE = re.compile(r"^AREA\[OverallStatus\](\w+) AND "
                       r"AREA\[StatusVerifiedDate\]RANGE\[([^,\]]+),([^,\]]+)\]$")
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"


@dataclass
class Fault:
    """What to do instead of (or to) the normal answer of one request.

    ``status``/``body``/``content_type`` replace the answer's (None keeps it); ``headers`` are
    added; ``delay`` waits before answering; ``truncate`` cuts the body in half (Content-Length
    matches the cut body); ``drop`` closes the connection without answering.
    """

    status: int | None = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay: float = 0.0
    truncate: bool = False
    drop: bool = False

    @classmethod
    def html(cls, status: int = 200) -> Fault:
        return cls(status=status, body=HTML_PAGE, content_type="text/html; charset=utf-8")

    @classmethod
    def text(cls, status: int, text: str) -> Fault:
        return cls(status=status, body=text, content_type="text/plain; charset=utf-8")

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Fault:
        return cls(status=status, body=orjson.dumps(payload), content_type="application/json")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    target: str  # path and query, as sent
    received_at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def ids(self) -> list[str]:
        """The NCT ids of ``filter.ids`` (empty when absent)."""
        value = self.params.get("filter.ids", "")
        return [i for i in re.split(r"[,|]", value) if i]


class FakeRegistry:
    """An in-memory registry behind a real HTTP server. Start with ``with`` or ``start()``."""

    def __init__(
        self,
        studies: Iterable[dict[str, Any]] = (),
        *,
        api_version: str = "2.0.5",
        data_timestamp: str = "2026-11-25T09:00:05",
        token_on_last_page: bool = False,
    ) -> None:
        self.studies: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}  # old NCT id -> current NCT id
        self.fault_plan: deque[Fault | None] = deque()
        self.fault_hook: Callable[[LoggedRequest], Fault | None] | None = None
        self.requests: list[LoggedRequest] = []
        self.api_version = api_version
        self.data_timestamp = data_timestamp
        # The real registry sometimes hands out a nextPageToken whose page is empty.
        self.token_on_last_page = token_on_last_page
        self._tokens: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for study in studies:
            self.add(study)

    # ------------------------------------------------------------- set-up

    def add(self, document: dict[str, Any]) -> str:
        """Store (or replace) a study under its own NCT id; return the id."""
        nct_id = document["protocolSection"]["identificationModule"]["nctId"]
        self.studies[nct_id] = document
        return nct_id

    def add_alias(self, alias: str, current: str) -> None:
        """Make ``alias`` an old id of ``current`` (also listed in the document's nctIdAliases)."""
        self.aliases[alias] = current
        ident = self.studies[current]["protocolSection"]["identificationModule"]
        ident.setdefault("nctIdAliases", [])
        if alias not in ident["nctIdAliases"]:
            ident["nctIdAliases"].append(alias)

    def fail_next(self, *faults: Fault | None) -> None:
        """Queue faults for the next requests, one each (``None`` answers normally)."""
        with self._lock:
            self.fault_plan.extend(faults)

    def requests_to(self, suffix: str) -> list[LoggedRequest]:
        """Logged requests whose path ends with ``suffix`` (e.g. ``"/studies"``)."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    # ------------------------------------------------------------- server

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeRegistry is not started")
        return f"http://127.0.0.1:{self._server.server_port}/api/v2"

    def start(self) -> FakeRegistry:
        registry = self

        class Handler(_Handler):
            fake = registry

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------- answers

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, bytes, str, dict[str, str]]:
        """The normal answer: status, body, content type, extra headers."""
        if path == "/api/v2/version":
            return _json(
                200, {"apiVersion": self.api_version, "dataTimestamp": self.data_timestamp}
            )
        unknown = sorted(set(params) - KNOWN_PARAMS)
        if unknown:
            return _text(400, f"Unknown parameter(s): {', '.join(unknown)}")
        if params.get("format", "json") != "json":
            return _text(400, "Only format=json is supported by the fake registry")
        if path == "/api/v2/studies":
            return self._listing(params)
        match = re.fullmatch(r"/api/v2/studies/([^/]+)", path)
        if match is None:
            return _text(404, f"No such endpoint: {path}")
        nct_id = match.group(1)
        with self._lock:
            document = self.studies.get(nct_id)
            current = self.aliases.get(nct_id)
        if document is None and current is not None:
            query = urllib.parse.urlencode(params)
            location = f"/api/v2/studies/{current}" + (f"?{query}" if query else "")
            status, body, ctype, _ = _text(301, f"Moved to {current}")
            return status, body, ctype, {"Location": location}
        if document is None:
            return _text(404, f"Study {nct_id} not found")
        return _json(200, _project(document, params.get("fields")))

    def _listing(self, params: dict[str, str]) -> tuple[int, bytes, str, dict[str, str]]:
        try:
            page_size = int(params.get("pageSize", "10"))
        except ValueError:
            return _text(400, "pageSize must be an integer")
        if not 0 <= page_size <= 1000:
            return _text(400, "pageSize must be between 0 and 1000")
        fields = params.get("fields")
        if fields and (bad := [f for f in fields.split(",") if f not in FIELD_PATHS]):
            return _text(400, f"Unknown field(s): {', '.join(bad)}")
        since, until = "0000", "9999"
        if "filter.advanced" in params and (
                status := STATUS_RE.match(params["filter.advanced"])) is not None:
            return self._by_status(params, *status.groups())
        if "filter.advanced" in params:
            match = RANGE_RE.match(params["filter.advanced"])
            if match is None:
                return _text(400, f"Unsupported filter.advanced: {params['filter.advanced']}")
            since = "0000" if match.group(1) == "MIN" else match.group(1)
            until = "9999" if match.group(2) == "MAX" else match.group(2)
        # a later page may change only these (the API's own rule for pageToken)
        query = tuple(sorted((k, v) for k, v in params.items()
                             if k not in ("pageToken", "countTotal", "pageSize")))
        offset = 0
        if "pageToken" in params:
            with self._lock:
                entry = self._tokens.get(params["pageToken"])
            if entry is None or entry[1] != query:
                return _text(400, "Invalid pageToken (unknown, or the query changed)")
            offset = entry[0]
        with self._lock:
            selected = self._select(params, since, until)
        page = selected[offset : offset + page_size]
        payload: dict[str, Any] = {"studies": [_project(doc, fields) for doc in page]}
        end = offset + len(page)
        if end < len(selected) or (self.token_on_last_page and page):
            token = secrets.token_urlsafe(24)
            with self._lock:
                self._tokens[token] = (end, query)
            payload["nextPageToken"] = token
        if params.get("countTotal") == "true" and "pageToken" not in params:
            payload["totalCount"] = len(selected)
        return _json(200, payload)

    def _by_status(self, params: dict[str, str], status: str, since: str, until: str
                   ) -> tuple[int, bytes, str, dict[str, str]]:
        """The status listing (one page, as much as the tests need)."""
        since = "0000" if since == "MIN" else since
        until = "9999" if until == "MAX" else until
        with self._lock:
            chosen = [doc for _nct_id, doc in sorted(self.studies.items())
                      if _dig(doc, ("protocolSection", "statusModule", "overallStatus")) == status
                      and since[:7] <= str(_dig(doc, ("protocolSection", "statusModule",
                                                       "statusVerifiedDate")) or "") <= until]
        payload: dict[str, Any] = {"studies": [_project(d, params.get("fields")) for d in chosen]}
        if params.get("countTotal") == "true":
            payload["totalCount"] = len(chosen)
        return _json(200, payload)

    def _select(self, params: dict[str, str], since: str, until: str) -> list[dict[str, Any]]:
        if "filter.ids" in params:
            ids = [i for i in re.split(r"[,|]", params["filter.ids"]) if i]
            wanted = {self.aliases.get(i, i) for i in ids}
            candidates = [self.studies[i] for i in sorted(wanted) if i in self.studies]
        else:
            candidates = [self.studies[i] for i in sorted(self.studies)]
        term = params.get("query.term", "").lower()
        cond = params.get("query.cond", "").lower()
        chosen = []
        for doc in candidates:
            posted = _dig(doc, FIELD_PATHS["LastUpdatePostDate"]) or {}
            if not since <= str(posted.get("date", "")) <= until:
                continue
            if term and term not in _searchable(doc, with_titles=True):
                continue
            if cond and cond not in _searchable(doc, with_titles=False):
                continue
            chosen.append(doc)
        return chosen

    def _next_fault(self, request: LoggedRequest) -> Fault | None:
        if self.fault_hook is not None:
            fault = self.fault_hook(request)
            if fault is not None:
                return fault
        with self._lock:
            return self.fault_plan.popleft() if self.fault_plan else None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeRegistry
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        fake = self.fake
        split = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        sent = {name.lower(): value for name, value in self.headers.items()}
        request = LoggedRequest(split.path, params, sent, self.path)
        with fake._lock:
            fake.requests.append(request)
        fault = fake._next_fault(request)
        if fault is not None and fault.delay and fake._stopping.wait(fault.delay):
            return
        if fault is not None and fault.drop:
            self.close_connection = True
            return
        try:
            status, body, ctype, headers = fake.answer(split.path.rstrip("/"), params)
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hang
            status, body, ctype, headers = _text(500, f"fake registry error: {exc!r}")
        if fault is not None:
            status = fault.status if fault.status is not None else status
            if fault.body is not None:
                body = fault.body.encode() if isinstance(fault.body, str) else fault.body
            ctype = fault.content_type or ctype
            headers = {**headers, **fault.headers}
            if fault.truncate:
                body = body[: len(body) // 2]
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


# ----------------------------------------------------------------- documents


def load_fixture(name: str) -> dict[str, Any]:
    """A real API v2 document from ``../shared/ctgov`` (e.g. ``"NCT03934567.json"``)."""
    from shared_data import ctgov_file

    result: dict[str, Any] = orjson.loads(ctgov_file(name).read_bytes())
    return result


def nct(number: int) -> str:
    """``nct(42)`` -> ``"NCT00000042"``."""
    return f"NCT{number:08d}"


def make_study(
    template_doc: dict[str, Any],
    nct_id: str,
    last_update: str,
    *,
    overall_status: str | None = None,
    brief_title: str | None = None,
    conditions: list[str] | None = None,
    keywords: list[str] | None = None,
) -> dict[str, Any]:
    """A deep copy of a real document with a new NCT id, last-update date and overrides."""
    doc = copy.deepcopy(template_doc)
    protocol = doc.setdefault("protocolSection", {})
    ident = protocol.setdefault("identificationModule", {})
    ident["nctId"] = nct_id
    ident.pop("nctIdAliases", None)
    status = protocol.setdefault("statusModule", {})
    posted = status.get("lastUpdatePostDateStruct") or {}
    status["lastUpdatePostDateStruct"] = {**posted, "date": last_update}
    if overall_status is not None:
        status["overallStatus"] = overall_status
    if brief_title is not None:
        ident["briefTitle"] = brief_title
    if conditions is not None:
        protocol.setdefault("conditionsModule", {})["conditions"] = list(conditions)
    if keywords is not None:
        protocol.setdefault("conditionsModule", {})["keywords"] = list(keywords)
    return doc


def _project(document: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """The document restricted to ``fields`` (whole when None), nested as the API nests it."""
    if not fields:
        return document
    result: dict[str, Any] = {}
    for name in fields.split(","):
        path = FIELD_PATHS[name]
        value = _dig(document, path)
        if value is None:
            continue
        target = result
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return result


def _searchable(document: dict[str, Any], *, with_titles: bool) -> str:
    ident = _dig(document, ("protocolSection", "identificationModule")) or {}
    conds = _dig(document, ("protocolSection", "conditionsModule")) or {}
    parts = [*conds.get("conditions", []), *conds.get("keywords", [])]
    if with_titles:
        parts += [ident.get("briefTitle", ""), ident.get("officialTitle", "")]
    return "\n".join(parts).lower()


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _json(status: int, payload: Any) -> tuple[int, bytes, str, dict[str, str]]:
    return status, orjson.dumps(payload), "application/json", {}


def _text(status: int, text: str) -> tuple[int, bytes, str, dict[str, str]]:
    return status, text.encode(), "text/plain; charset=utf-8", {}
