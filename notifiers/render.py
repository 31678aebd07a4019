"""Render an alert as plain text or HTML, safe by construction.

Registry text (titles, summaries, old/new values) is untrusted: it may hold markup, CR/LF
meant to inject mail headers, or terminal escape sequences. Every function here that turns
such text into output cleans it on the way:

* ``clean_line`` — one line, control and bidi-override characters removed (headers, subjects);
* ``clean_text`` — the same but keeps newlines and tabs (plain-text bodies, terminals);
* ``html`` — formats a literal template, escaping every value that is not already ``Html``
  (the urlwatch ``SafeHtml`` idea), so forgetting to escape is not possible.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Iterable, Mapping
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
