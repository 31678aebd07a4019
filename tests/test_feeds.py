"""Atom feeds: the pure renderer, the web routes and ``trialwatch feed``, parsed as XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from test_web import NCT, OTHER, SCRIPT_TITLE, build_trial_database

from trialwatch.monitor.feeds import ATOM_NS, FeedInfo, entry_id, feed_id, render_feed
from trialwatch.monitor.views import VersionChanges
from trialwatch.storage.engine import Database

A = f"{{{ATOM_NS}}}"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def event(kind: str, summary: str, severity: str = "medium", *, version: int = 2,
          at: str = "2026-02-10T12:00:00Z") -> dict[str, Any]:
    return {"nct_id": NCT, "kind": kind, "field": kind, "old": None, "new": None,
            "severity": severity, "from_version": version - 1, "to_version": version,
            "detected_at": at, "summary": summary}


def parse(body: bytes) -> ET.Element:
    root = ET.fromstring(body)
    assert root.tag == f"{A}feed"
    return root


def assert_valid_atom(root: ET.Element) -> list[ET.Element]:
    """Feed-level id/title/updated/author; every entry id/title/updated; RFC 3339 times."""
    for name in ("id", "title", "updated"):
        assert (root.findtext(f"{A}{name}") or "").strip(), name
    assert RFC3339.match(root.findtext(f"{A}updated") or "")
    assert root.find(f"{A}author/{A}name") is not None
    entries = root.findall(f"{A}entry")
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert (entry.findtext(f"{A}{name}") or "").strip(), name
        assert RFC3339.match(entry.findtext(f"{A}updated") or "")
        assert (entry.findtext(f"{A}id") or "").startswith("urn:uuid:")
        assert entry.find(f"{A}content") is not None
    ids = [e.findtext(f"{A}id") for e in entries]
    assert len(ids) == len(set(ids)), "entry ids must be unique"
    return entries


# --- the pure renderer ---------------------------------------------------------------------

@dataclass
class Group:
    nct_id: str
    title: str | None
    version: int
    events: list[dict[str, Any]] = field(default_factory=list)
    content_hash: str = ""

    headline = VersionChanges.headline
    updated = VersionChanges.updated
    published = VersionChanges.published


def test_one_entry_per_version_with_headline_title_and_readable_content():
    group = Group(NCT, "A trial", 3, [
        event("status", "Recruitment status: Not yet recruiting → Recruiting", "high", version=3),
        event("enrollment", "Enrollment: 20 → 40", version=3, at="2026-02-11T08:00:00Z")])
    root = parse(render_feed(FeedInfo(key="changes", title="Changes"), [group]))
    (entry,) = assert_valid_atom(root)
    assert entry.findtext(f"{A}title") == (
        f"{NCT}: Recruitment status: Not yet recruiting → Recruiting (+1 more)")
    assert entry.findtext(f"{A}updated") == "2026-02-11T08:00:00Z"
    assert entry.findtext(f"{A}published") == "2026-02-10T12:00:00Z"
    assert root.findtext(f"{A}updated") == "2026-02-11T08:00:00Z"
    content = entry.find(f"{A}content")
    assert content is not None and content.get("type") == "html"
    assert "<li><strong>Enrollment</strong> (medium): Enrollment: 20 → 40</li>" in content.text
    assert "version 2 → 3" in content.text
    link = entry.find(f"{A}link")
    assert link is not None and link.get("href") == f"https://clinicaltrials.gov/study/{NCT}"
    assert [c.get("term") for c in entry.findall(f"{A}category")] == ["status", "enrollment"]


def test_ids_are_stable_per_trial_version_and_per_feed():
    at = "2026-02-10T12:00:00Z"
    assert entry_id(NCT, "aa", at) == entry_id(NCT, "aa", at)
    assert len({entry_id(NCT, "aa", at), entry_id(NCT, "bb", at), entry_id(OTHER, "aa", at),
                entry_id(NCT, "aa", "2026-02-11T12:00:00Z")}) == 4
    assert feed_id("changes") != feed_id(f"trial/{NCT}")
    group = Group(NCT, None, 4, [event("dates", "Start date moved", version=4, at=at)], "cc")
    root = parse(render_feed(FeedInfo(key=f"trial/{NCT}", title="t"), [group]))
    assert root.findtext(f"{A}id") == feed_id(f"trial/{NCT}")
    assert root.findtext(f"{A}entry/{A}id") == entry_id(NCT, "cc", at)


def test_entry_ids_do_not_depend_on_version_numbers():
    """``backfill`` may renumber versions; a feed reader must not see old entries as new."""
    events = [event("status", "s", "high", version=3)]
    before = render_feed(FeedInfo(key="changes", title="t"), [Group(NCT, None, 3, events, "h")])
    after = render_feed(FeedInfo(key="changes", title="t"), [Group(NCT, None, 9, events, "h")])
    assert parse(before).findtext(f"{A}entry/{A}id") == parse(after).findtext(f"{A}entry/{A}id")


def test_registry_text_is_escaped_and_control_characters_dropped():
    nasty = 'Title <script>alert(1)</script> & "quotes"\x00\x1b[31m'
    group = Group(NCT, nasty, 2, [event("description", f"Title: old → {nasty}")])
    body = render_feed(FeedInfo(key="changes", title=nasty), [group])
    assert b"<script>" not in body and b"\x00" not in body and b"\x1b" not in body
    root = parse(body)
    (entry,) = assert_valid_atom(root)
    assert "<script>alert(1)</script>" in (entry.findtext(f"{A}title") or "")
    content = entry.findtext(f"{A}content") or ""
    assert "&lt;script&gt;" in content and "<script>" not in content  # escaped HTML


def test_empty_feed_is_valid_and_reproducible():
    info = FeedInfo(key="query/none", title="Nothing yet")
    first, second = render_feed(info, []), render_feed(info, [])
    assert first == second
    root = parse(first)
    assert assert_valid_atom(root) == []
    assert root.findtext(f"{A}updated") == "1970-01-01T00:00:00Z"


def test_self_and_alternate_links_when_the_dashboard_address_is_known():
    info = FeedInfo(key="changes", title="t", self_url="https://tw.example/feeds/changes.atom",
                    alternate_url="https://tw.example/changes")
    group = Group(NCT, None, 2, [event("status", "s", "high")])
    root = parse(render_feed(info, [group], entry_link=lambda g: f"https://tw.example/x/{g.version}"))
    rels = {link.get("rel"): link.get("href") for link in root.findall(f"{A}link")}
    assert rels == {"self": info.self_url, "alternate": info.alternate_url}
    entry_links = {link.get("rel"): link.get("href")
                   for link in root.findall(f"{A}entry/{A}link")}
    assert entry_links == {"alternate": "https://tw.example/x/2",
                           "related": f"https://clinicaltrials.gov/study/{NCT}"}


# --- the feeds over a real database --------------------------------------------------------

def stored_entry_ids(db: Database, versions: list[tuple[str, int]]) -> list[str]:
    """The entry ids the stored versions must get: content hash + first detection time."""
    from sqlalchemy import func, select

    from trialwatch.storage import repository as repo
    from trialwatch.storage.models import Event

    ids = []
    with db.transaction() as session:
        for nct_id, number in versions:
            trial = repo.trial(session, nct_id)
            assert trial is not None
            stored = repo.version(session, trial, number)
            assert stored is not None
            first = session.scalar(select(func.min(Event.detected_at)).where(
                Event.trial_id == trial.id, Event.to_version == number))
            if isinstance(first, str):
                first = datetime.fromisoformat(first)
            ids.append(entry_id(nct_id, stored.content_hash, first.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return ids


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    database = build_trial_database(tmp_path_factory.mktemp("feeds"))
    yield database
    database.close()


@pytest.fixture(scope="module")
def client(db: Database) -> TestClient:
    from trialwatch.monitor.web import create_app

    with TestClient(create_app(db)) as test_client:
        yield test_client


def test_changes_feed_has_one_entry_per_changed_version_newest_first(client: TestClient,
                                                                      db: Database):
    response = client.get("/feeds/changes.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = parse(response.content)
    entries = assert_valid_atom(root)
    assert len(entries) == 5  # NCT v3..v6, OTHER v2 (first versions have no events)
    updated = [e.findtext(f"{A}updated") or "" for e in entries]
    assert updated == sorted(updated, reverse=True)
    ids = [e.findtext(f"{A}id") for e in entries]
    assert ids == stored_entry_ids(db, [(OTHER, 2)] + [(NCT, v) for v in (6, 5, 4, 3)])
    assert SCRIPT_TITLE in (entries[1].findtext(f"{A}title") or "")
    assert b"<script>" not in response.content
    self_link = root.find(f"{A}link[@rel='self']")
    assert self_link is not None
    assert self_link.get("href") == "http://testserver/feeds/changes.atom"


def test_trial_feed_holds_only_that_trial(client: TestClient, db: Database):
    root = parse(client.get(f"/feeds/trial/{NCT}.atom").content)
    entries = assert_valid_atom(root)
    assert [e.findtext(f"{A}id") for e in entries] == stored_entry_ids(
        db, [(NCT, v) for v in (6, 5, 4, 3)])
    status_entry = entries[-1]
    assert "Recruitment status: Not yet recruiting → Recruiting" in (
        status_entry.findtext(f"{A}title") or "")
    link = status_entry.find(f"{A}link[@rel='alternate']")
    assert link is not None
    assert link.get("href") == f"http://testserver/trials/{NCT}?from=2&to=3#diff"


def test_query_feed_holds_the_trials_the_query_matched(client: TestClient):
    root = parse(client.get("/feeds/query/lupus-cart.atom").content)
    entries = assert_valid_atom(root)
    assert {(e.findtext(f"{A}title") or "").split(":")[0] for e in entries} == {NCT}


@pytest.mark.parametrize("path", ["/feeds/trial/NCT09999999.atom", "/feeds/trial/bogus.atom",
                                  "/feeds/query/unknown.atom"])
def test_unknown_feeds_are_404(client: TestClient, path: str):
    assert client.get(path).status_code == 404


def test_feed_entry_ids_agree_between_feeds(client: TestClient):
    everything = parse(client.get("/feeds/changes.atom").content)
    one = parse(client.get(f"/feeds/trial/{NCT}.atom").content)
    ids = {e.findtext(f"{A}id") for e in everything.findall(f"{A}entry")}
    assert {e.findtext(f"{A}id") for e in one.findall(f"{A}entry")} <= ids


# --- trialwatch feed -----------------------------------------------------------------------

def run_feed(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    from trialwatch.monitor.cli import cli

    monkeypatch.chdir(tmp_path)  # no ./trialwatch.toml
    return CliRunner().invoke(cli, ["--db", db.engine.url.render_as_string(False), "feed",
                                    *args])


def test_feed_command_writes_the_atom_document_to_stdout(db: Database, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    result = run_feed(db, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    entries = assert_valid_atom(parse(result.stdout_bytes))
    assert len(entries) == 5
    links = {link.get("href") for link in parse(result.stdout_bytes).iter(f"{A}link")}
    assert f"https://clinicaltrials.gov/study/{NCT}" in links
    again = run_feed(db, tmp_path, monkeypatch)
    assert again.stdout_bytes == result.stdout_bytes  # static hosting: reproducible


def test_feed_command_for_one_trial_or_query_with_base_url(db: Database, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    trial = parse(run_feed(db, tmp_path, monkeypatch, OTHER).stdout_bytes)
    assert [e.findtext(f"{A}id") for e in assert_valid_atom(trial)] == stored_entry_ids(
        db, [(OTHER, 2)])
    query = run_feed(db, tmp_path, monkeypatch, "--query", "lupus-cart",
                     "--base-url", "https://tw.example/")
    root = parse(query.stdout_bytes)
    assert len(assert_valid_atom(root)) == 4
    self_link = root.find(f"{A}link[@rel='self']")
    assert self_link is not None
    assert self_link.get("href") == "https://tw.example/feeds/query/lupus-cart.atom"


@pytest.mark.parametrize(("args", "message"), [
    ((NCT, "--query", "lupus-cart"), "not both"),
    (("NCT1",), "not an NCT ID"),
    (("NCT09999999",), "not in the database"),
    (("--query", "nope"), "no saved query"),
])
def test_feed_command_errors_are_one_line(db: Database, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         args: tuple[str, ...], message: str):
    result = run_feed(db, tmp_path, monkeypatch, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_feed_timestamps_are_the_detection_times(db: Database):
    from trialwatch.monitor.views import recent_changes

    with db.transaction() as session:
        groups = recent_changes(session, nct_id=NCT)
    for group in groups:
        assert datetime.fromisoformat(group.updated.replace("Z", "+00:00")).tzinfo is not None
