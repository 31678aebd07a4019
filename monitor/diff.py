"""Diff two canonical records into classified change events (pure functions, no I/O).

How it works:
1. Sections whose hash did not move are skipped without looking inside.
2. Each remaining section is *projected*: only keys known to both versions survive (unknown
   never counts as a change) and identity-keyed lists become dicts keyed by identity
   (a site by facility+city, an outcome by measure, a criterion by text), so reordering is
   not a change and one added site is one entry.
3. The projections are compared field by field (strict JSON equality: ``1`` is not ``1.0``
   nor ``true``), which says *which* fields differ; the keyed lists then say which items.
   deepdiff then spells out what moved inside each changed item with nested lists or
   tables (``item_change_parts``; an item whose changed values are plain is spelled out
   directly, the same way).
   It is not run over whole sections: that answers "which field?" at 10-500x the cost (a
   1,148-site list walked item by item only to learn that ``sites`` changed).
4. ``FIELD_RULES`` (``trialwatch.monitor.change_rules``) says *what* each difference is:
   its event kind, severity and label.
   Removed + added list items that are near-identical are paired into one "reworded" or
   "changed" event (outcome switching, a criterion edited) instead of two.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from trialwatch.monitor.change_rules import (
    ENUM_FIELDS,
    ENUM_KEYS,
    FIELD_RULES,
    WHOLE_LIST_FIELDS,
    FieldRule,
)
from trialwatch.monitor.events import ChangeEvent, humanize, quote, shorten, sort_key
from trialwatch.monitor.record import LIST_IDENTITY, TrialRecord, canonical_dumps, identity_key
from trialwatch.monitor.results_changes import RESULTS_CONTENT, content_changes, unposted_changes
from trialwatch.monitor.sites import SITES, TIE_BREAKERS, same_place, tie_breaker

# Near-identical removed+added items closer than this are one "reworded/changed" event.
PAIRING_RATIO = 0.6
# Pairing compares every removed item with every added one; past this many pairs, don't.
MAX_PAIRING_WORK = 10_000
# More added / removed / changed items than this in one list become one summary event.
MAX_ITEM_EVENTS = 25

_MISSING = object()


def diff_records(old: TrialRecord, new: TrialRecord) -> list[ChangeEvent]:
    """Every meaningful change from ``old`` to ``new``, most severe first, deterministic."""
    if old.content_hash == new.content_hash:
        return []
    old_hashes, new_hashes = old.section_hashes, new.section_hashes
    events: list[ChangeEvent] = []
    for section in sorted(set(old.sections) & set(new.sections)):
        if old_hashes[section] == new_hashes[section]:
            continue
        events.extend(_diff_section(new.nct_id, section,
                                    old.sections[section], new.sections[section]))
    return sorted(_fold_results_first_posted(events), key=sort_key)


def _fold_results_first_posted(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """Results first posted is one event: its posting date and new sections fold into it."""
    posted = next((e for e in events
                   if e.field == "results.has_results" and e.new is True), None)
    if posted is None:
        return events
    date = next((e for e in events
                 if e.field == "dates.results_first_posted" and e.old is None), None)
    summary = f"Results first posted: {quote(date.new)}" if date else posted.summary
    return [replace(e, summary=summary) if e is posted else e for e in events
            if e is not date and not (e.field.startswith("results.") and e is not posted
                                      and not e.old)]


def project(section: str, old: Mapping[str, Any], new: Mapping[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keep only what both versions know; turn identity-keyed lists into dicts by identity."""
    old_p: dict[str, Any] = {}
    new_p: dict[str, Any] = {}
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if (section, key) in LIST_IDENTITY and isinstance(a, list) and isinstance(b, list):
            shared = _shared_identity(section, key, [*a, *b])
            a_items, b_items = _by_identity(section, key, a, b, shared)
            for ident in a_items.keys() & b_items.keys():
                a_items[ident], b_items[ident] = _common(a_items[ident], b_items[ident])
            a, b = a_items, b_items
        else:
            a, b = _common(a, b)
        old_p[key], new_p[key] = a, b
    return old_p, new_p


def _shared_identity(section: str, key: str, items: list[Any]) -> set[str]:
    """The identity fields every item of both versions knows: an intervention's type that a
    partial document does not carry must not make the same intervention look new."""
    parts = LIST_IDENTITY[(section, key)]
    return {p for p in parts if all(isinstance(i, Mapping) and p in i for i in items)}


def _by_identity(section: str, key: str, old: list[Any], new: list[Any], shared: set[str]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both versions' items by identity. Duplicates (two "Research Site"s in one city) get
    "#2", "#3", matched across versions by content (equal first, then most fields alike),
    never by list position: reordering them is no change, and one changed is one event."""
    old_groups = _groups(section, key, old, shared)
    new_groups = _groups(section, key, new, shared)
    old_keyed: dict[str, Any] = {}
    new_keyed: dict[str, Any] = {}
    known = _shared_keys([*old, *new]) if (section, key) == SITES else set()
    for ident in sorted(old_groups.keys() | new_groups.keys()):
        old_items, new_items = old_groups.get(ident, []), new_groups.get(ident, [])
        if (section, key) == SITES and max(len(old_items), len(new_items)) > 1:
            matched = _match_sites(old_items, new_items, known)
        else:
            matched = _match_duplicates(old_items, new_items)
        for n, (a, b) in enumerate(matched):
            unique = ident if n == 0 else f"{ident}#{n + 1}"
            if a is not _MISSING:
                old_keyed[unique] = a
            if b is not _MISSING:
                new_keyed[unique] = b
    return old_keyed, new_keyed


def _shared_keys(items: list[Any]) -> set[str]:
    """The tie-breaking fields every site of both versions knows."""
    return {k for k in TIE_BREAKERS if all(isinstance(i, Mapping) and k in i for i in items)}


def _match_sites(old: list[Any], new: list[Any], known: set[str]) -> list[tuple[Any, Any]]:
    """Sites sharing facility and city, paired across versions only when their zip, state,
    country and coordinates agree (as a multiset: alike sites by content, equal first);
    the rest are sites that closed or opened, never one site with an invented zip change.
    Pairs come first, so a site found again keeps the plain identity."""
    by_old: dict[str, list[Any]] = {}
    by_new: dict[str, list[Any]] = {}
    for item in old:
        by_old.setdefault(tie_breaker(item, known), []).append(item)
    for item in new:
        by_new.setdefault(tie_breaker(item, known), []).append(item)
    pairs: list[tuple[Any, Any]] = []
    single: list[tuple[Any, Any]] = []
    for tie in sorted(by_old.keys() | by_new.keys()):
        for a, b in _match_duplicates(by_old.get(tie, []), by_new.get(tie, [])):
            (pairs if a is not _MISSING and b is not _MISSING else single).append((a, b))
    return pairs + single


def _groups(section: str, key: str, items: list[Any], shared: set[str]
            ) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for item in sorted(items, key=canonical_dumps):
        ident = identity_key(section, key, {p: v for p, v in item.items() if p in shared})
        groups.setdefault(ident, []).append(item)
    return groups


def _match_duplicates(old: list[Any], new: list[Any]) -> list[tuple[Any, Any]]:
    """Items of one identity paired across versions (``_MISSING`` for no counterpart):
    equal ones first, then those with most fields alike; ties broken by content, so the
    pairing is the same whichever version comes first."""
    if len(old) <= 1 and len(new) <= 1:
        return [(old[0] if old else _MISSING, new[0] if new else _MISSING)]

    old_json, new_json = [canonical_dumps(a) for a in old], [canonical_dumps(b) for b in new]

    def rank(i: int, j: int) -> tuple[Any, ...]:
        a, b = old[i], new[j]
        alike = sum(1 for k in a.keys() & b.keys() if a[k] == b[k])
        return (old_json[i] != new_json[j], -alike, *sorted((old_json[i], new_json[j])))

    pairs: list[tuple[Any, Any]] = []
    used_old: set[int] = set()
    used_new: set[int] = set()
    for i, j in sorted(((i, j) for i in range(len(old)) for j in range(len(new))),
                       key=lambda ij: rank(*ij)):
        if i not in used_old and j not in used_new:
            pairs.append((old[i], new[j]))
            used_old.add(i)
            used_new.add(j)
    pairs += [(a, _MISSING) for i, a in enumerate(old) if i not in used_old]
    pairs += [(_MISSING, b) for j, b in enumerate(new) if j not in used_new]
    return pairs


def _common(a: Any, b: Any) -> tuple[Any, Any]:
    """Drop dict keys only one side knows (recursively): unknown is not a change."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(a.keys() & b.keys())
        pairs = {k: _common(a[k], b[k]) for k in keys}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    return a, b


def _diff_section(nct_id: str, section: str, old: Mapping[str, Any],
                  new: Mapping[str, Any]) -> list[ChangeEvent]:
    old_p, new_p = project(section, old, new)
    changed_fields = sorted(key for key in old_p if _differs(old_p[key], new_p[key]))
    events: list[ChangeEvent] = []
    for key in changed_fields:
        rule = FIELD_RULES.get((section, key), FieldRule("other", "low", key))
        if rule.kind is None:
            continue
        a, b = old_p[key], new_p[key]
        if section == "results" and key == "unposted_events":
            events.extend(unposted_changes(nct_id, a or [], b or []))
        elif section == "results" and key in RESULTS_CONTENT:
            events.extend(content_changes(nct_id, key, a, b))
        elif isinstance(a, dict) and (section, key) in LIST_IDENTITY:
            events.extend(_keyed_list_events(nct_id, section, key, rule, a, b))
        elif (isinstance(a, list) and isinstance(b, list)
              and (section, key) not in WHOLE_LIST_FIELDS):
            events.extend(_plain_list_events(nct_id, section, key, rule, a, b))
        else:
            events.append(_value_event(nct_id, section, key, rule, a, b))
    return events


def _differs(a: Any, b: Any) -> bool:
    """Unequal, or equal in Python but not as JSON (``1`` vs ``1.0``, ``true`` vs ``1``)."""
    return bool(a != b) or canonical_dumps(a) != canonical_dumps(b)


def _event(nct_id: str, rule: FieldRule, field: str, old: Any, new: Any, summary: str,
           severity: str | None = None) -> ChangeEvent:
    assert rule.kind is not None
    return ChangeEvent(nct_id=nct_id, kind=rule.kind, field=field, old=old, new=new,
                       severity=severity or rule.severity, summary=summary)


def _value_event(nct_id: str, section: str, key: str, rule: FieldRule, old: Any,
                 new: Any) -> ChangeEvent:
    field = f"{section}.{key}"
    if (section, key) == ("status", "overall_status"):
        field = "overall_status"
    if (section, key) == ("results", "has_results"):
        summary = "Results first posted" if new else "Results withdrawn"
        return _event(nct_id, rule, field, old, new, summary)
    if (section, key) == ("results", "modules"):
        return _event(nct_id, rule, field, old, new, "Results updated: "
                      f"{humanize(old)} → {humanize(new)}")
    if (section, key) == ("design", "enrollment") and isinstance(old, dict) \
            and isinstance(new, dict):
        summary = f"Enrollment: {quote(old.get('count'))} → {quote(new.get('count'))}"
        old_t, new_t = old.get("type"), new.get("type")
        if old_t != new_t:
            summary += f" ({humanize(old_t).lower()} → {humanize(new_t).lower()})"
        elif new_t:
            summary += f" ({new_t.lower()})"
        return _event(nct_id, rule, field, old, new, summary)
    if any(isinstance(v, str) and len(v) > 80 for v in (old, new)):  # long text: the new
        summary = (f"{rule.label} removed" if new is None  # one, shortened
                   else f"{rule.label} changed to: {shorten(speak(new), 100)}")
        return _event(nct_id, rule, field, old, new, summary)
    enum = (section, key) in ENUM_FIELDS
    summary = f"{rule.label}: {speak(old, enum)} → {speak(new, enum)}"
    return _event(nct_id, rule, field, old, new, summary)


def speak(value: Any, enum: bool = False) -> str:
    """A value in a summary: an enumeration humanized, free text quoted as written (inside a
    table, only the keys in ``ENUM_KEYS`` are enumerations)."""
    if enum:
        return humanize(value)
    if isinstance(value, dict) and "date" not in value and "count" not in value:
        return ", ".join(f"{k}: {speak(v, k in ENUM_KEYS)}"
                         for k, v in sorted(value.items()) if v is not None)
    if isinstance(value, list):
        return ", ".join(speak(v) for v in value) if value else "(none)"
    return quote(value)


def _plain_list_events(nct_id: str, section: str, key: str, rule: FieldRule,
                       old: list[Any], new: list[Any]) -> Iterable[ChangeEvent]:
    field = f"{section}.{key}"
    old_set, new_set = set(map(str, old)), set(map(str, new))
    for item in sorted(new_set - old_set):
        yield _event(nct_id, rule, field, None, item, f"{rule.label} added: {item}")
    for item in sorted(old_set - new_set):
        yield _event(nct_id, rule, field, item, None, f"{rule.label} removed: {item}")


def _keyed_list_events(nct_id: str, section: str, key: str, rule: FieldRule,
                       old: dict[str, Any], new: dict[str, Any]) -> Iterable[ChangeEvent]:
    field = f"{section}.{key}"
    removed = {k: old[k] for k in sorted(old.keys() - new.keys())}
    added = {k: new[k] for k in sorted(new.keys() - old.keys())}
    may_pair = same_place if (section, key) == SITES else None
    for old_key, new_key in _pair_similar(removed, added, may_pair):
        a, b = removed.pop(old_key), added.pop(new_key)
        verb = "reworded" if set(a) <= {"text", "context"} else "changed"
        yield _event(nct_id, rule, field, a, b,
                     f"{rule.label} {verb}: {_describe(a)} → {_describe(b)}")
    yield from _item_events(nct_id, rule, field, "added", list(added.values()))
    yield from _item_events(nct_id, rule, field, "removed", list(removed.values()))
    changed = [(old[i], new[i]) for i in sorted(old.keys() & new.keys()) if old[i] != new[i]]
    if len(changed) > MAX_ITEM_EVENTS:
        yield from _bulk_change_events(nct_id, rule, field, changed)
        return
    for a, b in changed:
        parts = item_change_parts(a, b)
        yield _event(nct_id, rule, field, a, b,
                     f"{rule.label} changed: {_describe(b)}: {shorten('; '.join(parts))}")


def item_change_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed inside one list item, spelled out: ``status Recruiting → Completed``,
    ``interventions + Drug X``, ``interventions − Placebo``.

    An item whose differing keys hold plain values (a site's status, an outcome's time
    frame: nearly every change) is spelled out directly, exactly as deepdiff would.
    Otherwise deepdiff walks the two items (small: one arm with its nested lists) and
    reports every path that moved; whole sections are never handed to it.
    """
    flat = _flat_change_parts(old, new)
    return flat if flat is not None else _deepdiff_change_parts(old, new)


_PLAIN = (str, int, float, bool, type(None))


def _flat_change_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str] | None:
    """The parts when no key that differs holds a list or table on both sides; else None."""
    parts = []
    for key in old.keys() | new.keys():
        enum = key in ENUM_KEYS
        if key not in new:
            parts.append(f"{key} − {speak(old[key], enum)}")
        elif key not in old:
            parts.append(f"{key} + {speak(new[key], enum)}")
        else:
            a, b = old[key], new[key]
            if not _differs(a, b):
                continue
            if not (isinstance(a, _PLAIN) and isinstance(b, _PLAIN)):
                return None
            parts.append(f"{key} {speak(a, enum)} → {speak(b, enum)}")
    return sorted(parts)


def _deepdiff_change_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """deepdiff's report of every path that moved. Imported here: only an item with a
    changed nested list or table needs it (~0.1 s off every other command)."""
    from deepdiff import DeepDiff

    # threshold_to_diff_deeper=0: always name the keys that moved, even when the two
    # share few keys (deepdiff's default reports such a table as one opaque change).
    delta = DeepDiff(old, new, ignore_order=True, view="tree", threshold_to_diff_deeper=0)
    parts = []
    for report, levels in delta.items():
        for level in levels:
            path = [str(p) for p in level.path(output_format="list") if not isinstance(p, int)]
            name = ".".join(path) or "value"
            enum = bool(path) and path[-1] in ENUM_KEYS
            if report in ("iterable_item_added", "dictionary_item_added", "set_item_added"):
                parts.append(f"{name} + {speak(level.t2, enum)}")
            elif report in ("iterable_item_removed", "dictionary_item_removed",
                            "set_item_removed"):
                parts.append(f"{name} − {speak(level.t1, enum)}")
            else:
                parts.append(f"{name} {speak(level.t1, enum)} → {speak(level.t2, enum)}")
    return sorted(parts)


def _item_events(nct_id: str, rule: FieldRule, field: str, verb: str,
                 items: list[Any]) -> Iterable[ChangeEvent]:
    """One event per added/removed item, or one summary when a whole list moved at once."""
    if len(items) > MAX_ITEM_EVENTS:
        summary = {"count": len(items), "examples": [_describe(i) for i in items[:10]]}
        old, new = (None, summary) if verb == "added" else (summary, None)
        yield _event(nct_id, rule, field, old, new,
                     f"{len(items)} {_plural(rule.label)} {verb}, e.g. {_describe(items[0])}")
        return
    for item in items:
        old, new = (None, item) if verb == "added" else (item, None)
        yield _event(nct_id, rule, field, old, new, f"{rule.label} {verb}: {_describe(item)}")


def _plural(label: str) -> str:
    label = label.lower()
    return label[: -len("criterion")] + "criteria" if label.endswith("criterion") else label + "s"


def _bulk_change_events(nct_id: str, rule: FieldRule, field: str,
                        changed: list[tuple[Any, Any]]) -> Iterable[ChangeEvent]:
    """Many items changed the same way (every site closed): one event per kind of change."""
    groups: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {}
    for a, b in changed:
        subs = [sub for sub in sorted(a) if a.get(sub) != b.get(sub)]
        old_values = {sub: a.get(sub) for sub in subs}
        new_values = {sub: b.get(sub) for sub in subs}
        signature = canonical_dumps([old_values, new_values]).decode()
        _o, _n, count = groups.get(signature, (old_values, new_values, 0))
        groups[signature] = (old_values, new_values, count + 1)
    for old_values, new_values, count in groups.values():
        parts = [f"{sub} {speak(old_values[sub], sub in ENUM_KEYS)} → "
                 f"{speak(new_values[sub], sub in ENUM_KEYS)}" for sub in old_values]
        yield _event(nct_id, rule, field, {**old_values, "count": count},
                     {**new_values, "count": count},
                     f"{rule.label} changed at {count} {_plural(rule.label)}: "
                     f"{shorten('; '.join(parts))}")


def _pair_similar(removed: Mapping[str, Any], added: Mapping[str, Any],
                  may_pair: Callable[[Any, Any], bool] | None = None
                  ) -> list[tuple[str, str]]:
    """Greedy best-first pairing of removed and added items whose identities are close
    (and, with ``may_pair``, that may be one item at all: sites in the same place)."""
    if len(removed) * len(added) > MAX_PAIRING_WORK:
        return []
    candidates = []
    for r in removed:
        for a in added:
            if may_pair is not None and not may_pair(removed[r], added[a]):
                continue
            ratio = difflib.SequenceMatcher(None, r, a, autojunk=False).ratio()
            if ratio >= PAIRING_RATIO:
                candidates.append((ratio, r, a))
    pairs: list[tuple[str, str]] = []
    used_r: set[str] = set()
    used_a: set[str] = set()
    for _ratio, r, a in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if r not in used_r and a not in used_a:
            pairs.append((r, a))
            used_r.add(r)
            used_a.add(a)
    return pairs


def _describe(item: Any) -> str:
    if not isinstance(item, dict):
        return shorten(str(item))
    for name_key in ("text", "measure", "label", "name", "id", "citation", "pmid"):
        if item.get(name_key):
            if name_key == "name" and item.get("type"):
                return shorten(f"{item['name']} ({humanize(item['type']).lower()})")
            return shorten(str(item[name_key]))
    if "facility" in item:
        where = ", ".join(str(item[k]) for k in ("facility", "city", "country") if item.get(k))
        return shorten(where)
    return shorten(speak(item))
