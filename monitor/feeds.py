"""Atom feeds (RFC 4287) of change events: data in, XML bytes out, no I/O.

One entry is one trial version's events: its title is the headline (the most severe change,
"+N more"), its content a readable list of *what* changed — what the registry's own RSS
never says. Identifiers are ``urn:uuid:`` URIs derived from the feed key or from
(trial, version), so an entry keeps its id across regenerations and hosts, and a feed
reader shows a version once even if later events (a removal) update it.

XML is built with ``xml.etree``, which escapes text and attributes; characters XML 1.0
forbids (control characters a registry record may carry) are dropped first.
"""

from __future__ import annotations

import html
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trialwatch.monitor import __version__
from trialwatch.monitor.events import humanize

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_MEDIA_TYPE = "application/atom+xml; charset=utf-8"
#: Namespace of every id this module mints; fixed forever, or readers see duplicates.
ID_NAMESPACE = uuid.UUID("4262a426-6cfd-49f1-8ab2-d5d6bf3f2287")
STUDY_URL = "https://clinicaltrials.gov/study/{nct_id}"
EMPTY_FEED_UPDATED = "1970-01-01T00:00:00Z"

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class ChangeGroup(Protocol):
    """One trial version's events, most severe first
    (``trialwatch.monitor.views.VersionChanges``)."""

    @property
    def nct_id(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def version(self) -> int: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def events(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def headline(self) -> str: ...
    @property
    def updated(self) -> str: ...
    @property
    def published(self) -> str: ...


@dataclass(frozen=True)
class FeedInfo:
    """What a feed is about: ``key`` (``changes``, ``trial/NCT…``, ``query/NAME``) makes its id."""

    key: str
    title: str
    subtitle: str | None = None
    self_url: str | None = None
    alternate_url: str | None = None


def feed_id(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, f'trialwatch/feed/{key}')}"


def entry_id(nct_id: str, content_hash: str, published: str) -> str:
    """Stable per trial version: the same version is the same entry in every feed.

    Built from what identifies the version for good (its content and when its changes were
    detected), not its number: ``backfill`` may renumber versions to keep them in order.
    """
    name = f"trialwatch/{nct_id}/{content_hash}/{published}"
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, name)}"


def entry_title(group: ChangeGroup) -> str:
    return f"{group.nct_id}: {group.headline}"


def entry_html(group: ChangeGroup) -> str:
    """The entry's content: the trial, the version, and one line per change (escaped)."""
    study = STUDY_URL.format(nct_id=group.nct_id)
    title = group.title or "(untitled trial)"
    since = [v for e in group.events if isinstance(v := e.get("from_version"), int)]
    span = f"version {min(since)} → {group.version}" if since else f"version {group.version}"
    lines = [f'<p><a href="{html.escape(study)}">{html.escape(group.nct_id)}</a> '
             f"{html.escape(title)} — {html.escape(span)}</p>", "<ul>"]
    for event in group.events:
        kind = humanize(str(event.get("kind", "other")).upper())
        lines.append(f"<li><strong>{html.escape(kind)}</strong> "
                     f"({html.escape(str(event.get('severity', '')))}): "
                     f"{html.escape(str(event.get('summary', '')))}</li>")
    lines.append("</ul>")
    return "\n".join(lines)


def render_feed(info: FeedInfo, groups: Sequence[ChangeGroup], *,
                updated: str | None = None,
                entry_link: Callable[[ChangeGroup], str] | None = None) -> bytes:
    """The Atom document for ``groups`` (newest first), as UTF-8 bytes.

    ``updated`` is the feed's time when it has no entries (default: the epoch, so the
    output is reproducible); otherwise the newest entry's time. ``entry_link`` gives each
    entry's page (default: the trial on clinicaltrials.gov).
    """
    # Names stay unqualified and the root declares the default namespace: ElementTree's
    # ``default_namespace=`` cannot serialize Atom's unqualified attributes.
    feed = ET.Element("feed", xmlns=ATOM_NS)
    _add(feed, "id", feed_id(info.key))
    _add(feed, "title", info.title, type="text")
    if info.subtitle:
        _add(feed, "subtitle", info.subtitle, type="text")
    newest = max((g.updated for g in groups), default=None)
    _add(feed, "updated", newest or updated or EMPTY_FEED_UPDATED)
    author = _add(feed, "author")
    _add(author, "name", "trialwatch")
    _add(feed, "generator", "trialwatch", version=__version__)
    if info.self_url:
        _add(feed, "link", rel="self", type="application/atom+xml", href=info.self_url)
    if info.alternate_url:
        _add(feed, "link", rel="alternate", type="text/html", href=info.alternate_url)
    for group in groups:
        _add_entry(feed, group, entry_link)
    ET.indent(feed)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"


def _add_entry(feed: ET.Element, group: ChangeGroup,
               entry_link: Callable[[ChangeGroup], str] | None) -> None:
    study = STUDY_URL.format(nct_id=group.nct_id)
    entry = _add(feed, "entry")
    _add(entry, "id", entry_id(group.nct_id, group.content_hash, group.published))
    _add(entry, "title", entry_title(group), type="text")
    _add(entry, "updated", group.updated)
    _add(entry, "published", group.published)
    link = entry_link(group) if entry_link else study
    _add(entry, "link", rel="alternate", type="text/html", href=link)
    if link != study:
        _add(entry, "link", rel="related", type="text/html", href=study)
    for kind in dict.fromkeys(str(e.get("kind")) for e in group.events):
        _add(entry, "category", term=kind, label=humanize(kind.upper()))
    if group.title:
        _add(entry, "summary", group.title, type="text")
    _add(entry, "content", entry_html(group), type="html")


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (NUL, ESC, lone surrogates…)."""
    return _NOT_XML_CHAR.sub("", text)
