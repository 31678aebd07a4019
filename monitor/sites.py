"""Sites that share a facility and a city ("Research Site", Rosario): telling them apart.

Sponsors anonymize sites, so one record can list several sites with the same facility and
city. Such sites are told apart by the fields that differ between them: zip, state,
country and coordinates (``TIE_BREAKERS``), matched across versions as a multiset (two
alike sites in both versions are two unchanged sites, whatever their order). A site that
is not found again may only be taken for a *changed* site (a zip corrected, a site
renamed) when it is in the same city and country. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trialwatch.monitor.record import collapse_whitespace

SITES = ("locations", "sites")
TIE_BREAKERS: tuple[str, ...] = ("zip", "state", "country", "geo")


def tie_breaker(item: Mapping[str, Any], known: set[str]) -> str:
    """The part of a site's identity that separates it from others of its facility and
    city: its ``TIE_BREAKERS`` values that both versions know (``known``)."""
    return "|".join(_part(item.get(key)) for key in TIE_BREAKERS if key in known)


def same_place(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Two sites in the same city and country: only those may be one *changed* site."""
    return all(_part(old.get(key)) == _part(new.get(key)) for key in ("city", "country"))


def _part(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={value[k]}" for k in sorted(value))
    return collapse_whitespace(str(value)).casefold()
