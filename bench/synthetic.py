"""A synthetic registry of N studies, generated lazily from the real documents in ../shared/ctgov.

``SyntheticRegistry`` is ``tests/registry_server.FakeRegistry`` (the same real local HTTP
server the test suite uses) with its ``studies`` dict replaced by a lazy mapping: study ``i``
is the real template document ``template_of(i)`` with its own NCT ID and last-update date,
built (shallow copies, no deepcopy) only when a request asks for it. 100,000 studies cost a
few MB, not 2 GB of dicts.

The mix of templates (``MIX``) follows the registry's shape: mostly 10-20 KB records, one in
ten with posted results (48 KB), one in two hundred huge (369 KB, 1,148 sites).

A *changed* study gets a new revision: today's last-update date, another overall status,
enrollment + revision, and every other revision one added site.  *Churn* studies are
registry records nobody watches that changed recently (they show up in "changed since"
listings, as the real registry's few thousand daily updates do).

``RegistryProcess`` runs the registry in its own process (so its memory and CPU are not the
trialwatch process's) and drives it through a pipe.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from registry_server import FakeRegistry, load_fixture  # noqa: E402

WATCHED_BASE = 10_000_000  # watched study i is NCT{10000000 + i}
CHURN_BASE = 20_000_000  # unwatched registry churn j is NCT{20000000 + j}
BASE_DATES_BEFORE = "2025-12-31"  # every unchanged study was last updated on/before this

# (fixture, slots out of 200): ~19 KB per document on average.
MIX: tuple[tuple[str, int], ...] = (
    ("NCT04267848.json", 1),  # 369 KB, 1,148 sites
    ("NCT03722472.json", 20),  # 48 KB, results posted
    ("NCT06323538.json", 35),  # 19 KB, observational
    ("NCT03934567.json", 44),  # 12 KB, 26 sites
    ("NCT02576665.full.json", 50),  # 16 KB
    ("NCT00184067.json", 50),  # 10 KB
)
SLOTS = 200
STATUSES = ("RECRUITING", "ACTIVE_NOT_RECRUITING", "COMPLETED", "SUSPENDED", "TERMINATED")
STAMP_FIELDS = {"NCTId", "NCTIdAlias", "LastUpdatePostDate", "OverallStatus"}


def nct_of(i: int, base: int = WATCHED_BASE) -> str:
    return f"NCT{base + i:08d}"


def index_of(nct_id: str) -> tuple[int, int]:
    """(base, i) of a synthetic id."""
    number = int(nct_id[3:])
    base = CHURN_BASE if number >= CHURN_BASE else WATCHED_BASE
    return base, number - base


_SLOT_TABLE: list[int] = [k for k, (_name, n) in enumerate(MIX) for _ in range(n)]
assert len(_SLOT_TABLE) == SLOTS


def template_index(i: int) -> int:
    """Which MIX template study i is made from (a scrambled but fixed assignment)."""
    return _SLOT_TABLE[(i * 7919 + 13) % SLOTS]


def base_date(i: int) -> str:
    """A study's original last-update date, spread over 2019..2025."""
    return f"{2019 + i % 7}-{1 + i % 12:02d}-{1 + i % 28:02d}"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Templates:
    def __init__(self) -> None:
        self.docs = [load_fixture(name) for name, _ in MIX]
        self.names = [name for name, _ in MIX]

    def build(self, nct_id: str, i: int, date: str, revision: int) -> dict[str, Any]:
        tpl = self.docs[template_index(i)]
        doc = dict(tpl)
        ps = dict(tpl["protocolSection"])
        doc["protocolSection"] = ps
        ident = dict(ps["identificationModule"])
        ident["nctId"] = nct_id
        ident.pop("nctIdAliases", None)
        ps["identificationModule"] = ident
        status = dict(ps["statusModule"])
        status["lastUpdatePostDateStruct"] = {
            **(status.get("lastUpdatePostDateStruct") or {}), "date": date}
        ps["statusModule"] = status
        if revision:
            status["overallStatus"] = STATUSES[revision % len(STATUSES)]
            design = dict(ps.get("designModule") or {})
            enrollment = dict(design.get("enrollmentInfo") or {})
            enrollment["count"] = int(enrollment.get("count") or 0) + revision
            design["enrollmentInfo"] = enrollment
            ps["designModule"] = design
            if revision % 2 == 0:
                contacts = dict(ps.get("contactsLocationsModule") or {})
                contacts["locations"] = [*(contacts.get("locations") or []), {
                    "facility": f"Benchmark Site {revision}", "city": "Springfield",
                    "country": "United States", "status": "RECRUITING"}]
                ps["contactsLocationsModule"] = contacts
        return doc


class LazyStudies(Mapping[str, dict[str, Any]]):
    """``FakeRegistry.studies`` for N watched + K churn synthetic studies, built on demand."""

    def __init__(self, n: int, templates: Templates) -> None:
        self.n = n
        self.churn = 0
        self.templates = templates
        self.revisions: dict[str, int] = {}  # nct_id -> revision (changed studies only)
        self.dates: dict[str, str] = {}  # nct_id -> last update (changed + churn only)

    def _index(self, nct_id: str) -> tuple[int, int] | None:
        if not re.fullmatch(r"NCT\d{8}", nct_id):
            return None
        base, i = index_of(nct_id)
        limit = self.n if base == WATCHED_BASE else self.churn
        return (base, i) if 0 <= i < limit else None

    def date_of(self, nct_id: str) -> str:
        found = self.dates.get(nct_id)
        if found is not None:
            return found
        return base_date(index_of(nct_id)[1])

    def stamp(self, nct_id: str) -> dict[str, Any]:
        return {"protocolSection": {
            "identificationModule": {"nctId": nct_id},
            "statusModule": {"lastUpdatePostDateStruct": {"date": self.date_of(nct_id),
                                                          "type": "ACTUAL"}}}}

    def __getitem__(self, nct_id: str) -> dict[str, Any]:
        found = self._index(nct_id)
        if found is None:
            raise KeyError(nct_id)
        return self.templates.build(nct_id, found[1], self.date_of(nct_id),
                                    self.revisions.get(nct_id, 0))

    def __contains__(self, nct_id: object) -> bool:
        return isinstance(nct_id, str) and self._index(nct_id) is not None

    def __iter__(self) -> Iterator[str]:
        yield from (nct_of(i) for i in range(self.n))
        yield from (nct_of(j, CHURN_BASE) for j in range(self.churn))

    def __len__(self) -> int:
        return self.n + self.churn


class SyntheticRegistry(FakeRegistry):
    """FakeRegistry serving lazily generated studies; answers listings without building
    full documents when only stamps are asked for."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lazy = LazyStudies(n, Templates())
        self.studies = self.lazy

    def change(self, count: int, round_number: int, date: str | None = None) -> list[str]:
        """Give ``count`` watched studies (a different set each round) a new revision."""
        n = self.lazy.n
        count = min(count, n)
        stride = max(1, n // max(count, 1))
        offset = (round_number * 7) % stride
        date = date or today()
        changed = []
        for k in range(count):
            nct_id = nct_of((offset + k * stride + round_number * 101) % n)
            with self._lock:
                self.lazy.revisions[nct_id] = self.lazy.revisions.get(nct_id, 0) + 1
                self.lazy.dates[nct_id] = date
            changed.append(nct_id)
        return changed

    def set_churn(self, count: int, date: str | None = None) -> None:
        """``count`` unwatched registry studies updated on ``date`` (default today)."""
        date = date or today()
        with self._lock:
            for j in range(self.lazy.churn, count):
                self.lazy.dates[nct_of(j, CHURN_BASE)] = date
            self.lazy.churn = max(self.lazy.churn, count)

    def _by_status(self, params: dict[str, str], status: str, since: str, until: str
                   ) -> tuple[int, bytes, str, dict[str, str]]:
        """No synthetic study's status is switched by the registry: an empty listing."""
        return 200, orjson.dumps({"studies": [], "totalCount": 0}), "application/json", {}

    def _select(self, params: dict[str, str], since: str, until: str) -> Any:
        if "query.term" in params or "query.cond" in params:
            return super()._select(params, since, until)
        fields = params.get("fields") or ""
        stamps_only = bool(fields) and set(fields.split(",")) <= STAMP_FIELDS
        if "filter.ids" in params:
            ids = sorted({i for i in re.split(r"[,|]", params["filter.ids"]) if i})
            ids = [i for i in ids if i in self.lazy and since <= self.lazy.date_of(i) <= until]
        elif since > BASE_DATES_BEFORE:  # only changed and churn studies can match
            key = (since, until, len(self.lazy.dates), sum(self.lazy.revisions.values()))
            if self._range_key != key:
                self._range_ids = sorted(i for i, d in self.lazy.dates.items()
                                         if since <= d <= until)
                self._range_key = key
            ids = self._range_ids
        else:
            ids = [i for i in self.lazy if since <= self.lazy.date_of(i) <= until]
        return _LazyPage(ids, self.lazy.stamp if stamps_only else self.lazy.__getitem__)

    _range_key: tuple[Any, ...] | None = None
    _range_ids: list[str] = []  # noqa: RUF012 - replaced per instance


class _LazyPage(Sequence[dict[str, Any]]):
    """What ``_select`` returns: the matching ids; documents are built only for the page
    the listing slices out."""

    def __init__(self, ids: list[str], build: Callable[[str], dict[str, Any]]) -> None:
        self.ids, self.build = ids, build

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.build(i) for i in self.ids[index]]
        return self.build(self.ids[index])


# ----------------------------------------------------------------- its own process


def serve(n: int) -> None:
    """``python -m bench.synthetic N``: serve, print the base URL, obey JSON-line commands."""
    registry = SyntheticRegistry(n, data_timestamp="2026-01-01T00:00:00").start()
    out = sys.stdout
    out.write(orjson.dumps(registry.base_url).decode() + "\n")
    out.flush()
    marker = 0
    for line in sys.stdin:
        command, args = orjson.loads(line)
        result: Any = None
        if command == "stop":
            break
        if command == "change":
            result = registry.change(*args)
        elif command == "churn":
            registry.set_churn(*args)
        elif command == "timestamp":
            registry.data_timestamp = args[0]
        elif command == "mark":
            with registry._lock:
                marker = len(registry.requests)
        elif command == "since_mark":  # the request targets logged since the mark
            with registry._lock:
                result = [r.target for r in registry.requests[marker:]]
        else:
            result = {"error": f"unknown command {command!r}"}
        out.write(orjson.dumps(result).decode() + "\n")
        out.flush()
    registry.stop()


class RegistryProcess:
    """The synthetic registry in a child process: ``with RegistryProcess(n) as reg: ...``."""

    def __init__(self, n: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.synthetic", str(n)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
        assert self._process.stdout is not None
        self.base_url: str = orjson.loads(self._process.stdout.readline())
        self.root = self.base_url.split("/api/v2")[0]
        self._stamp = 0

    def _call(self, command: str, *args: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(orjson.dumps([command, args]).decode() + "\n")
        self._process.stdin.flush()
        result = orjson.loads(self._process.stdout.readline())
        if isinstance(result, dict) and "error" in result:
            raise RuntimeError(result["error"])
        return result

    def change(self, count: int, round_number: int) -> list[str]:
        return list(self._call("change", count, round_number))

    def churn(self, count: int) -> None:
        self._call("churn", count)

    def new_data_load(self) -> None:
        """Bump ``/version``'s dataTimestamp (the registry loaded new data)."""
        self._stamp += 1
        self._call("timestamp", f"2026-01-01T00:00:00.{self._stamp:04d}")

    def mark(self) -> None:
        self._call("mark")

    def requests_since_mark(self) -> list[str]:
        """Request targets (path + query) received since ``mark()``, in order."""
        return list(self._call("since_mark"))

    @property
    def pid(self) -> int:
        return self._process.pid

    def cpu_seconds(self) -> float:
        """CPU time the registry process has used so far (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(orjson.dumps(["stop", []]).decode() + "\n")
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> RegistryProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def document_bytes_mean() -> float:
    """Mean compact size of a synthetic document (for the report)."""
    docs = Templates().docs
    total = sum(len(orjson.dumps(doc)) * n for doc, (_name, n) in zip(docs, MIX, strict=True))
    return total / SLOTS


if __name__ == "__main__":
    serve(int(sys.argv[1]))
