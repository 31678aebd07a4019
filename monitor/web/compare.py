"""The side-by-side view of two versions of a trial: which fields differ, old beside new.

Pure: two ``TrialRecord``s in, rows of cells out. It follows the diff's rules so the page
and the change events agree: a field only one version knows is unknown, not a change; lists
of things with an identity (criteria, sites, outcomes) are matched by identity, so each
item is marked ``added``, ``removed``, ``changed`` or ``same`` (shown for context, folded
when the list is long).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trialwatch.monitor.diff import FIELD_RULES, WHOLE_LIST_FIELDS, project
from trialwatch.monitor.events import humanize, shorten
from trialwatch.monitor.record import SECTIONS, TrialRecord

#: Lists longer than this show only what changed, plus a count of unchanged items.
CONTEXT_LIMIT = 40
_NAME_KEYS = ("text", "measure", "label", "name", "facility", "id", "citation", "pmid")


@dataclass(frozen=True)
class Cell:
    text: str
    state: str  # "same" | "added" | "removed" | "changed" | "folded"


@dataclass(frozen=True)
class FieldRow:
    section: str
    field: str
    label: str
    kind: str
    old: list[Cell]
    new: list[Cell]


def side_by_side(old: TrialRecord, new: TrialRecord) -> list[FieldRow]:
    """Every field whose value differs in what both versions know, in record order."""
    rows: list[FieldRow] = []
    for section, fields in SECTIONS.items():
        old_section, new_section = old.sections.get(section), new.sections.get(section)
        if old_section is None or new_section is None:
            continue  # a section one source does not carry is unknown, not a change
        old_p, new_p = project(section, old_section, new_section)
        for name in fields:
            if name not in old_p or old_p[name] == new_p[name]:
                continue
            rule = FIELD_RULES.get((section, name))
            if rule is not None and rule.kind is None:
                continue  # bookkeeping (last update posted, ...)
            kind = rule.kind if rule is not None and rule.kind else "other"
            a, b = old_section[name], new_section[name]
            if isinstance(a, list) and isinstance(b, list) \
                    and (section, name) not in WHOLE_LIST_FIELDS:
                label = f"{humanize(section.upper())} · {name.replace('_', ' ')}"
                old_cells, new_cells = _list_cells(a, b, old_p[name], new_p[name])
            else:
                label = rule.label if rule is not None else name.replace("_", " ")
                old_cells = [Cell(describe(a), "changed")]
                new_cells = [Cell(describe(b), "changed")]
            rows.append(FieldRow(section, name, label, kind, old_cells, new_cells))
    return rows


def _list_cells(old: list[Any], new: list[Any], old_p: Any, new_p: Any
                ) -> tuple[list[Cell], list[Cell]]:
    """Cells for a list field; ``old_p``/``new_p`` are the diff's projections of it."""
    if isinstance(old_p, Mapping) and isinstance(new_p, Mapping):
        # Identity-keyed: the projection holds one key per item, in the list's order.
        old_keys, new_keys = list(old_p), list(new_p)
    else:
        old_keys, new_keys = [str(v) for v in old], [str(v) for v in new]
        old_p, new_p = dict(zip(old_keys, old, strict=True)), dict(zip(new_keys, new,
                                                                        strict=True))

    def state(key: str, mine: Mapping[str, Any], others: Mapping[str, Any],
              missing: str) -> str:
        if key not in others:
            return missing
        return "same" if mine[key] == others[key] else "changed"

    old_cells = [Cell(describe(item), state(key, old_p, new_p, "removed"))
                 for item, key in zip(old, old_keys, strict=True)]
    new_cells = [Cell(describe(item), state(key, new_p, old_p, "added"))
                 for item, key in zip(new, new_keys, strict=True)]
    if len(old_cells) > CONTEXT_LIMIT or len(new_cells) > CONTEXT_LIMIT:
        old_cells, new_cells = _fold(old_cells), _fold(new_cells)
    return old_cells, new_cells


def _fold(cells: list[Cell]) -> list[Cell]:
    kept = [c for c in cells if c.state != "same"]
    same = len(cells) - len(kept)
    if same:
        kept.append(Cell(f"… {same} unchanged", "folded"))
    return kept


def describe(value: Any, limit: int = 400) -> str:
    """A value as one readable line: a criterion's text, a site's facility and city, ..."""
    if isinstance(value, Mapping) and "count" in value:  # enrollment
        kind = value.get("type")
        return f"{humanize(value['count'])} ({humanize(kind).lower()})" if kind else \
            humanize(value["count"])
    if isinstance(value, Mapping) and "date" in value:
        return humanize(value)
    if isinstance(value, Mapping):
        name_key = next((k for k in _NAME_KEYS if value.get(k)), None)
        rest = [f"{k.replace('_', ' ')}: {humanize(v)}" for k, v in sorted(value.items())
                if k != name_key and v not in (None, "", [])]
        if name_key is None:
            return shorten("; ".join(rest), limit) or "(none)"
        head = str(value[name_key])
        return shorten(f"{head} ({'; '.join(rest)})" if rest else head, limit)
    return shorten(humanize(value), limit)
