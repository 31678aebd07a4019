"""Render an alert as plain text or HTML, safe by construction.

Registry text (titles, summaries, old/new values) is untrusted: it may hold markup, CR/LF
meant to inject mail headers, or terminal escape sequences. Every function here that turns
such text into output cleans it on the way:

* ``clean_line`` — one line, control and bidi-override characters removed (headers, subjects);
* ``clean_text`` — the same but keeps newlines and tabs (plain-text bodies, terminals);
* ``html`` — formats a literal template, escaping every value that is not already ``Html``
  (the urlwatch ``SafeHtml`` idea), so forgetting to escape is not possible;
* ``escape_markdown`` — one line with every Markdown-significant character backslash-escaped
  (``message_blocks`` / ``render_markdown``: the bodies Apprise sends to chat services).
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

from trialwatch.notifiers.base import Alert

#: Characters that reorder or hide text (Trojan-Source style); never useful in alerts.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_WHITESPACE_RUN = re.compile(r"[ \t]+")
VALUE_LIMIT = 300
TEST_NOTICE = "This is a test alert from trialwatch"


def _is_unsafe(char: str, keep: str) -> bool:
    if char in keep:
        return False
    if char in _BIDI_CONTROLS:
        return True
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def clean_line(value: object, limit: int | None = None) -> str:
    """``value`` as one line: controls (CR, LF, ESC, NUL, ...) become spaces, runs collapse."""
    text = "".join(" " if _is_unsafe(c, keep="") else c for c in str(value))
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def clean_text(value: object) -> str:
    """``value`` with newlines and tabs kept (CRLF → LF) and every other control removed."""
    text = str(value).replace("\r\n", "\n")
    return "".join(" " if _is_unsafe(c, keep="\n\t") else c for c in text)


def format_value(value: Any, limit: int = VALUE_LIMIT) -> str:
    """An event's ``old`` / ``new`` value as one short readable line."""
    if value is None:
        text = "(none)"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, Mapping) and ("date" in value or "count" in value):
        shown = value.get("date", value.get("count"))
        kind = value.get("type")
        shown = f"{shown:,}" if isinstance(shown, int) and not isinstance(shown, bool) else shown
        text = f"{shown} ({str(kind).lower()})" if kind else str(shown)
    elif isinstance(value, Mapping):
        text = ", ".join(
            f"{k}: {format_value(v, limit)}" for k, v in value.items() if v is not None
        )
    elif isinstance(value, list | tuple | set | frozenset):
        text = "; ".join(format_value(v, limit) for v in value) or "(none)"
    else:
        text = str(value)
    return clean_line(text, limit)


def title_of(alert: Alert) -> str:
    return clean_line(alert.title, 500) if alert.title else "(untitled trial)"


def subject(alert: Alert, prefix: str = "[trialwatch]") -> str:
    """``[trialwatch] NCT07328581 — Recruitment status: Not yet recruiting → Recruiting``."""
    trial = [clean_line(alert.nct_id), "—"] if alert.nct_id else []
    parts = [clean_line(prefix), *trial, clean_line(alert.headline)]
    return clean_line(" ".join(p for p in parts if p), limit=250)


def _change_line(event: Mapping[str, Any]) -> str | None:
    """``old → new`` under a summary that does not already say it, else None: a summary
    with its own "→" ("Enrollment: 1,210 → 1,300 (estimated)"), an item added or removed,
    a new query match or a yes/no say everything a person needs."""
    old, new = event.get("old"), event.get("new")
    if old is None or new is None or "→" in str(event.get("summary", "")):
        return None
    if event.get("kind") in ("new_trial", "removed") or isinstance(old, bool):
        return None
    return f"{format_value(old)} → {format_value(new)}"


def _test_notice(alert: Alert) -> str:
    return (
        f"{TEST_NOTICE} (channel {clean_line(alert.channel, 100)}). "
        "If you can read this, the channel is configured correctly."
    )


def _event_lines(events: Iterable[Mapping[str, Any]], indent: str = "  ") -> list[str]:
    lines = []
    for event in events:
        severity = clean_line(event.get("severity", ""), 20)
        marker = f"[{severity}] " if severity else ""
        lines.append(f"{indent}* {marker}{clean_line(event.get('summary', ''), 500)}")
        if (change := _change_line(event)) is not None:
            lines.append(f"{indent}    {change}")
    return lines


def system_text(alert: Alert) -> str:
    """``system`` alerts: the sentence, then since when and why."""
    info = alert.system or {}
    lines = [clean_line(info.get("summary", ""), 1000)]
    if info.get("since"):
        lines.append(f"Since: {clean_line(info['since'], 40)}")
    if info.get("reason"):
        lines.append(f"Reason: {clean_line(info['reason'], 1000)}")
    return clean_text("\n".join(lines) + "\n")


def render_text(alert: Alert) -> str:
    """The plain-text body: title, links, each event (summary, old → new); a digest lists
    its trials in turn, a system alert says what happened to the monitor."""
    if alert.kind == "system":
        return system_text(alert)
    if alert.kind == "digest":
        return _digest_text(alert)
    lines: list[str] = []
    if alert.test:
        lines += [_test_notice(alert), ""]
    lines.append(f"{clean_line(alert.nct_id)} — {title_of(alert)}")
    if not alert.test:
        lines.append(f"Version {alert.version}")
    lines.append("")
    if alert.events:
        lines.append("Changes:")
        lines += _event_lines(alert.events)
        lines.append("")
    lines.append(f"{'ClinicalTrials.gov' if alert.test else 'View the trial'}: {alert.url}")
    if alert.dashboard_url:
        lines.append(f"See the change: {alert.dashboard_url}")
    return clean_text("\n".join(lines) + "\n")


def _digest_text(alert: Alert) -> str:
    lines = [alert.headline]
    if alert.period:
        lines.append(f"From {alert.period[0]} to {alert.period[1]}")
    for trial in alert.trials:
        title = clean_line(trial.title, 500) if trial.title else "(untitled trial)"
        lines += ["", f"{clean_line(trial.nct_id)} — {title}", *_event_lines(trial.events),
                  f"  View the trial: {trial.url}"]
        if trial.dashboard_url:
            lines.append(f"  See the changes: {trial.dashboard_url}")
    return clean_text("\n".join(lines) + "\n")


class Html(str):
    """Markup that is already safe. Only ``html()`` and ``join_html()`` should make one."""

    __slots__ = ()


def escape(value: object) -> Html:
    """``value`` as HTML text: ``Html`` passes through, anything else is cleaned and escaped."""
    if isinstance(value, Html):
        return value
    return Html(_html.escape(clean_text(value), quote=True))


def html(template: LiteralString, /, **values: object) -> Html:
    """Fill a literal ``{name}`` template; every value not already ``Html`` is escaped."""
    return Html(template.format(**{k: escape(v) for k, v in values.items()}))


def join_html(parts: Iterable[Html], sep: LiteralString = "") -> Html:
    return Html(sep.join(escape(p) for p in parts))


def _event_html(event: Mapping[str, Any]) -> Html:
    change = _change_line(event)
    return html(
        "<li><strong>{summary}</strong>{severity}{change}</li>",
        summary=clean_line(event.get("summary", ""), 500),
        severity=(
            html(' <span style="color:#666">[{s}]</span>', s=clean_line(event["severity"], 20))
            if event.get("severity")
            else Html("")
        ),
        change=html("<br><code>{c}</code>", c=change) if change is not None else Html(""),
    )


def _links_html(url: str, dashboard_url: str | None) -> Html:
    links = [html('<a href="{u}">View the trial on ClinicalTrials.gov</a>', u=url)]
    if dashboard_url:
        links.append(html('<a href="{u}">See the change on the dashboard</a>', u=dashboard_url))
    return html("<p>{links}</p>\n", links=join_html(links, " · "))


def _page(alert: Alert, prefix: str, body: Html) -> str:
    return html(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{subject}</title></head>\n"
        "<body>\n{body}</body></html>\n", subject=subject(alert, prefix), body=body)


def _events_html(events: Iterable[Mapping[str, Any]]) -> Html:
    return html("<ul>\n{items}\n</ul>\n", items=join_html((_event_html(e) for e in events),
                                                           "\n"))


def render_html(alert: Alert, prefix: str = "[trialwatch]") -> str:
    """The HTML body, equivalent to ``render_text``; every registry value escaped."""
    empty = Html("")
    if alert.kind == "system":
        info = alert.system or {}
        return _page(alert, prefix, html(
            "<h2>{summary}</h2>\n<p>{since}</p>\n<p>{reason}</p>\n",
            summary=clean_line(info.get("summary", ""), 1000),
            since=f"Since {info['since']}" if info.get("since") else "",
            reason=info.get("reason") or ""))
    if alert.kind == "digest":
        period = (html("<p>From {a} to {b}</p>\n", a=alert.period[0], b=alert.period[1])
                  if alert.period else empty)
        parts = [html("<h3><a href=\"{url}\">{nct_id}</a> — {title}</h3>\n{events}{links}",
                      url=t.url, nct_id=clean_line(t.nct_id),
                      title=clean_line(t.title, 500) if t.title else "(untitled trial)",
                      events=_events_html(t.events), links=_links_html(t.url, t.dashboard_url))
                 for t in alert.trials]
        return _page(alert, prefix, html("<h2>{h}</h2>\n{period}{trials}", h=alert.headline,
                                         period=period, trials=join_html(parts)))
    notice = html("<p><strong>{n}</strong></p>\n", n=_test_notice(alert)) if alert.test else empty
    events = (
        html("<h3>Changes</h3>\n{items}", items=_events_html(alert.events))
        if alert.events
        else empty
    )
    version = empty if alert.test else html("<p>Version {v}</p>\n", v=alert.version)
    return _page(alert, prefix, html(
        "{notice}<h2><a href=\"{url}\">{nct_id}</a> — {title}</h2>\n{version}{events}{links}",
        notice=notice,
        url=alert.url,
        nct_id=clean_line(alert.nct_id),
        title=title_of(alert),
        version=version,
        events=events,
        links=_links_html(alert.url, alert.dashboard_url),
    ))


# --- Markdown (Apprise) ----------------------------------------------------------------------

#: CommonMark punctuation that registry text could use to make markup, links or raw HTML.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&!])")


def escape_markdown(value: object, limit: int | None = None) -> str:
    r"""``value`` as one line of literal Markdown text: cleaned like ``clean_line``, then
    every character that could start markup, a link or raw HTML backslash-escaped
    (``<b>`` → ``\<b\>``), as CommonMark defines backslash escapes."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", clean_line(value, limit))


def _markdown_url(url: str) -> str:
    """A link destination that cannot end the link early or break out of it."""
    return "".join(f"%{ord(c):02X}" if c in " ()<>\\" or ord(c) < 33 else c
                   for c in clean_line(url))


@dataclass(frozen=True)
class Block:
    """One line (an event: its lines) of a Markdown or plain-text message. ``change``: it
    shows one change event; ``link``: where the rest of the message can be read (the
    dashboard's diff when known, else the trial's ClinicalTrials.gov page)."""

    text: str
    change: bool = False
    link: str = ""


class _Style:
    """Markdown or plain text: how a message's parts are written."""

    def __init__(self, markdown: bool) -> None:
        self.markdown = markdown

    def text(self, value: object, limit: int | None = None) -> str:
        return escape_markdown(value, limit) if self.markdown else clean_line(value, limit)

    def bold(self, text: str) -> str:
        return f"**{text}**" if self.markdown and text else text

    def link(self, label: str, url: str) -> str:
        return f"[{label}]({_markdown_url(url)})" if self.markdown else f"{label}: {url}"


def _event_blocks(style: _Style, events: Iterable[Mapping[str, Any]], link: str) -> list[Block]:
    blocks = []
    for event in events:
        severity = clean_line(event.get("severity", ""), 20)
        marker = f"{style.bold(style.text(severity))} · " if severity else ""
        text = f"- {marker}{style.text(event.get('summary', ''), 500)}"
        if (change := _change_line(event)) is not None:
            text += f"\n  {style.text(change)}"
        blocks.append(Block(text, change=True, link=link))
    return blocks


def _link_block(style: _Style, url: str, dashboard_url: str | None, label: str) -> Block:
    links = [style.link("View the trial on ClinicalTrials.gov", url)]
    if dashboard_url:
        links.append(style.link(label, dashboard_url))
    return Block(" · ".join(links) if style.markdown else "\n".join(links),
                 link=dashboard_url or url)


def message_blocks(alert: Alert, *, markdown: bool = True) -> list[Block]:
    """The message for chat services (Apprise) as blocks separated by blank lines: a trial
    alert (title, version, each change, links), a digest (each trial in turn) or a system
    alert. All registry text escaped (``markdown``) or cleaned to plain lines."""
    style = _Style(markdown)
    if alert.kind == "system":
        info = alert.system or {}
        blocks = [Block(style.bold(style.text(info.get("summary", ""), 1000)))]
        if info.get("since"):
            blocks.append(Block(f"Since: {style.text(info['since'], 40)}"))
        if info.get("reason"):
            blocks.append(Block(f"Reason: {style.text(info['reason'], 1000)}"))
        return blocks
    if alert.kind == "digest":
        blocks = [Block(style.bold(style.text(alert.headline)))]
        if alert.period:
            blocks.append(Block(f"From {style.text(alert.period[0])} to "
                                f"{style.text(alert.period[1])}"))
        for trial in alert.trials:
            link = trial.dashboard_url or trial.url
            title = style.text(trial.title, 500) if trial.title else "(untitled trial)"
            blocks.append(Block(style.bold(f"{style.text(trial.nct_id)} — {title}"), link=link))
            blocks += _event_blocks(style, trial.events, link)
            blocks.append(_link_block(style, trial.url, trial.dashboard_url,
                                      "See the changes on the dashboard"))
        return blocks
    link = alert.dashboard_url or alert.url
    blocks = [Block(style.text(_test_notice(alert)), link=link)] if alert.test else []
    blocks.append(Block(style.bold(f"{style.text(alert.nct_id)} — {style.text(title_of(alert))}"),
                        link=link))
    if not alert.test:
        blocks.append(Block(f"Version {alert.version}", link=link))
    blocks += _event_blocks(style, alert.events, link)
    blocks.append(_link_block(style, alert.url, alert.dashboard_url,
                              "See the change on the dashboard"))
    return blocks


def _separator(blocks: Sequence[Block], index: int) -> int:
    """Newlines before block ``index``: events follow each other line by line."""
    return 1 if blocks[index].change and blocks[index - 1].change else 2


def join_blocks(blocks: Sequence[Block]) -> str:
    """Blocks as one message: events one per line, other blocks a paragraph each."""
    text = ""
    for index, block in enumerate(blocks):
        if index:
            text += "\n" * _separator(blocks, index)
        text += block.text
    return text + "\n"


def render_markdown(alert: Alert) -> str:
    """The Markdown body (Apprise): like ``render_text``, with registry text escaped."""
    return join_blocks(message_blocks(alert, markdown=True))


def shorten(blocks: Sequence[Block], limit: int) -> str:
    """The message in at most ``limit`` characters: whole if it fits, else cut after the
    last block that fits and ended with ``… N more changes: <link>`` (N = change events cut,
    the link where they can be read), so nothing is dropped silently."""
    full = join_blocks(blocks)
    if len(full) <= limit:
        return full
    ends, total = [], 0  # ends[i]: length of the first i + 1 blocks joined
    for index, block in enumerate(blocks):
        total += len(block.text) + (_separator(blocks, index) if index else 0)
        ends.append(total)
    tail = ""
    for keep in range(min(bisect_right(ends, limit), len(blocks) - 1), -1, -1):
        cut = blocks[keep:]
        count = sum(1 for b in cut if b.change)
        link = next((b.link for b in cut if b.link), "") or next(
            (b.link for b in blocks if b.link), "")
        more = f"{count} more change{'s' if count != 1 else ''}" if count else "more"
        tail = f"… {more}: {link}" if link else f"… {more}"
        head = join_blocks(blocks[:keep]).rstrip("\n") if keep else ""
        text = f"{head}\n\n{tail}\n" if head else f"{tail}\n"
        if len(text) <= limit:
            return text
    # not even the note fits (an SMS-sized limit): the link alone, else what fits of the note
    link = next((b.link for b in blocks if b.link), "")
    return link if link and len(link) <= limit else tail[: max(limit, 0)]
