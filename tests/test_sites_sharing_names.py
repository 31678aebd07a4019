"""Sites that share facility and city ("Research Site"): told apart by zip, state, country
and coordinates, matched as a multiset, and paired as one changed site only in one place."""

from __future__ import annotations

from collections import Counter
from typing import Any

from docmaker import add_site, record, sites, study
from shared_data import real_study

from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import ChangeEvent
from trialwatch.monitor.sources.ctgov.parser import parse_study

BASE = "NCT03934567"  # a real document with 26 sites


def site_events(old: dict[str, Any], new: dict[str, Any]) -> list[ChangeEvent]:
    return [e for e in diff_records(record(old), record(new)) if e.kind == "locations"]


def research_site(doc: dict[str, Any], city: str, country: str, zip_code: str,
                  status: str = "RECRUITING") -> dict[str, Any]:
    return add_site(doc, "Research Site", city, country, zip=zip_code, status=status)


def test_second_site_opening_beside_one_that_starts_recruiting_is_one_added_one_changed() -> None:
    old = research_site(study(BASE), "Rosario", "Argentina", "2000", "NOT_YET_RECRUITING")
    new = research_site(study(BASE), "Rosario", "Argentina", "2000", "RECRUITING")
    research_site(new, "Rosario", "Argentina", "S2000CVB", "NOT_YET_RECRUITING")
    summaries = sorted(e.summary for e in site_events(old, new))
    assert summaries == [
        "Site added: Research Site, Rosario, Argentina",
        "Site changed: Research Site, Rosario, Argentina: status Not yet recruiting → Recruiting",
    ]


def test_alike_sites_in_another_order_are_no_change() -> None:
    old = study(BASE)
    for zip_code in ("1", "2", "3"):
        research_site(old, "Paris", "France", zip_code)
    new = study(BASE)
    for zip_code in ("3", "1", "2"):
        research_site(new, "Paris", "France", zip_code)
    assert site_events(old, new) == []


def test_two_identical_sites_and_a_third_alike_one_are_one_added_site() -> None:
    old = research_site(research_site(study(BASE), "Lyon", "France", "1"), "Lyon", "France", "1")
    new = research_site(research_site(study(BASE), "Lyon", "France", "1"), "Lyon", "France", "1")
    research_site(new, "Lyon", "France", "1")
    assert [e.summary for e in site_events(old, new)] == [
        "Site added: Research Site, Lyon, France"]


def test_a_site_removed_in_one_city_and_added_in_another_is_not_one_changed_site() -> None:
    old = research_site(study(BASE), "Sarasota", "United States", "34232", "WITHDRAWN")
    new = research_site(study(BASE), "Taichung", "Taiwan", "40705", "NOT_YET_RECRUITING")
    assert sorted(e.summary for e in site_events(old, new)) == [
        "Site added: Research Site, Taichung, Taiwan",
        "Site removed: Research Site, Sarasota, United States",
    ]


def test_a_unique_sites_zip_correction_is_still_one_changed_site() -> None:
    old = research_site(study(BASE), "Rosario", "Argentina", "2000")
    new = research_site(study(BASE), "Rosario", "Argentina", "S2000CVB")
    assert [e.summary for e in site_events(old, new)] == [
        "Site changed: Research Site, Rosario, Argentina: zip 2000 → S2000CVB"]


def test_site_coordinates_are_read_from_the_geo_point() -> None:
    doc = research_site(study(BASE), "Rosario", "Argentina", "2000")
    sites(doc)[-1]["geoPoint"] = {"lat": -32.94682, "lon": -60.63932}
    found = [s for s in parse_study(doc).get("locations", "sites") if s["city"] == "Rosario"]
    assert found[0]["geo"] == {"lat": -32.94682, "lon": -60.63932}


# ----------------------------------------------------------------- the real pairs


def real_site_events(nct_id: str, old_day: str, new_day: str) -> list[ChangeEvent]:
    old = parse_study(real_study(f"{nct_id}.{old_day}"))
    new = parse_study(real_study(f"{nct_id}.{new_day}"))
    return [e for e in diff_records(old, new) if e.kind == "locations"]


def test_real_nct06868277_rosario_and_sao_paulo_sites_started_recruiting_and_two_opened() -> None:
    events = real_site_events("NCT06868277", "20260228", "20260303")
    local = sorted(e.summary for e in events if "Rosario" in e.summary or "São Paulo" in e.summary)
    assert local == [
        "Site added: Research Site, Rosario, Argentina",
        "Site added: Research Site, São Paulo, Brazil",
        "Site changed: Research Site, Rosario, Argentina: status Not yet recruiting → Recruiting",
        "Site changed: Research Site, São Paulo, Brazil: status Not yet recruiting → Recruiting",
    ]
    assert not [e for e in events if "zip" in e.summary]


def test_real_nct05123482_sarasota_removed_and_taichung_added_are_two_events() -> None:
    events = real_site_events("NCT05123482", "20260212", "20260216")
    summaries = sorted(e.summary for e in events)
    assert "Site removed: Research Site, Sarasota, United States" in summaries
    assert "Site added: Research Site, Taichung, Taiwan" in summaries
    assert not [s for s in summaries if s.startswith("Site changed") and "Sarasota" in s]


def _raw_site_changes(old_doc: dict[str, Any], new_doc: dict[str, Any]
                      ) -> tuple[list[str], list[str], list[str]]:
    """The pair's true site changes, worked out from the raw documents the simple way:
    sites alike in facility, city, state, zip and country are compared by their statuses
    as multisets; cities of added, removed and status-changed sites."""
    def keyed(doc: dict[str, Any]) -> dict[tuple[Any, ...], Counter[Any]]:
        table: dict[tuple[Any, ...], Counter[Any]] = {}
        for site in doc["protocolSection"]["contactsLocationsModule"]["locations"]:
            key = tuple(site.get(k) for k in ("facility", "city", "state", "zip", "country"))
            table.setdefault(key, Counter())[site.get("status")] += 1
        return table

    old, new = keyed(old_doc), keyed(new_doc)
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    for key in old.keys() | new.keys():
        before, after = old.get(key, Counter()), new.get(key, Counter())
        gone, came = sum((before - after).values()), sum((after - before).values())
        changed += [key[1]] * min(gone, came)
        removed += [key[1]] * max(gone - came, 0)
        added += [key[1]] * max(came - gone, 0)
    return sorted(added), sorted(removed), sorted(changed)


def test_real_site_pairs_give_exactly_their_true_changes() -> None:
    for nct_id, old_day, new_day in (("NCT06868277", "20260228", "20260303"),
                                     ("NCT05123482", "20260212", "20260216")):
        old_doc = real_study(f"{nct_id}.{old_day}")
        new_doc = real_study(f"{nct_id}.{new_day}")
        events = [e for e in diff_records(parse_study(old_doc), parse_study(new_doc))
                  if e.kind == "locations"]

        def cities(prefix: str, found: list[ChangeEvent] = events) -> list[str]:
            return sorted(e.summary.split(", ")[1] for e in found if e.summary.startswith(prefix))

        added, removed, changed = _raw_site_changes(old_doc, new_doc)
        assert cities("Site added") == added
        assert cities("Site removed") == removed
        assert cities("Site changed") == changed
        assert len(events) == len(added) + len(removed) + len(changed)
