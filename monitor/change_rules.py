"""What each record field's change is: its event kind, severity and label, and how its
values are spoken about (an enumeration put into words, or free text quoted as written).

Pure data, read by ``trialwatch.monitor.diff``; every field of ``SECTIONS`` has a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENUM_FIELDS", "ENUM_KEYS", "FIELD_RULES", "WHOLE_LIST_FIELDS", "FieldRule"]


@dataclass(frozen=True)
class FieldRule:
    kind: str | None  # None: bookkeeping, never an event
    severity: str
    label: str  # "Recruitment status"; for list fields the singular item name


FIELD_RULES: dict[tuple[str, str], FieldRule] = {
    ("identification", "brief_title"): FieldRule("description", "low", "Title"),
    ("identification", "official_title"): FieldRule("description", "low", "Official title"),
    ("identification", "acronym"): FieldRule("identifiers", "low", "Acronym"),
    ("identification", "organization"): FieldRule("sponsor", "low", "Organization"),
    ("identification", "org_study_id"): FieldRule("identifiers", "low", "Org study ID"),
    ("identification", "secondary_ids"): FieldRule("identifiers", "low", "Secondary ID"),
    ("status", "overall_status"): FieldRule("status", "high", "Recruitment status"),
    ("status", "why_stopped"): FieldRule("status", "medium", "Why stopped"),
    ("status", "last_known_status"): FieldRule("status", "low", "Last known status"),
    ("status", "status_verified_date"): FieldRule(None, "low", "Status verified"),
    ("dates", "start"): FieldRule("dates", "medium", "Start date"),
    ("dates", "primary_completion"): FieldRule("dates", "medium", "Primary completion date"),
    ("dates", "completion"): FieldRule("dates", "medium", "Completion date"),
    ("dates", "first_posted"): FieldRule("dates", "low", "First posted"),
    ("dates", "results_first_posted"): FieldRule("results", "high", "Results first posted"),
    ("dates", "last_update_posted"): FieldRule(None, "low", "Last update posted"),
    ("dates", "last_update_submitted"): FieldRule(None, "low", "Last update submitted"),
    ("sponsor", "lead_sponsor"): FieldRule("sponsor", "medium", "Lead sponsor"),
    ("sponsor", "lead_sponsor_class"): FieldRule("sponsor", "low", "Lead sponsor class"),
    ("sponsor", "collaborators"): FieldRule("sponsor", "low", "Collaborator"),
    ("sponsor", "responsible_party"): FieldRule("sponsor", "low", "Responsible party"),
    ("description", "brief_summary"): FieldRule("description", "low", "Brief summary"),
    ("description", "detailed_description"): FieldRule(
        "description", "low", "Detailed description"),
    ("conditions", "conditions"): FieldRule("other", "low", "Condition"),
    ("conditions", "keywords"): FieldRule("other", "low", "Keyword"),
    ("design", "study_type"): FieldRule("design", "medium", "Study type"),
    ("design", "phases"): FieldRule("phase", "medium", "Phase"),
    ("design", "allocation"): FieldRule("design", "low", "Allocation"),
    ("design", "intervention_model"): FieldRule("design", "low", "Intervention model"),
    ("design", "primary_purpose"): FieldRule("design", "low", "Primary purpose"),
    ("design", "masking"): FieldRule("design", "low", "Masking"),
    ("design", "observational_model"): FieldRule("design", "low", "Observational model"),
    ("design", "time_perspective"): FieldRule("design", "low", "Time perspective"),
    ("design", "enrollment"): FieldRule("enrollment", "medium", "Enrollment"),
    ("arms", "arm_groups"): FieldRule("arms", "medium", "Arm"),
    ("arms", "interventions"): FieldRule("arms", "medium", "Intervention"),
    ("outcomes", "primary"): FieldRule("outcomes", "high", "Primary outcome"),
    ("outcomes", "secondary"): FieldRule("outcomes", "medium", "Secondary outcome"),
    ("outcomes", "other"): FieldRule("outcomes", "low", "Other outcome"),
    ("eligibility", "inclusion"): FieldRule("eligibility", "medium", "Inclusion criterion"),
    ("eligibility", "exclusion"): FieldRule("eligibility", "medium", "Exclusion criterion"),
    ("eligibility", "other_criteria"): FieldRule("eligibility", "medium", "Eligibility text"),
    ("eligibility", "sex"): FieldRule("eligibility", "medium", "Eligible sex"),
    ("eligibility", "minimum_age"): FieldRule("eligibility", "medium", "Minimum age"),
    ("eligibility", "maximum_age"): FieldRule("eligibility", "medium", "Maximum age"),
    ("eligibility", "healthy_volunteers"): FieldRule(
        "eligibility", "medium", "Accepts healthy volunteers"),
    ("eligibility", "std_ages"): FieldRule("eligibility", "low", "Age group"),
    ("contacts", "central_contacts"): FieldRule("contacts", "low", "Central contact"),
    ("contacts", "overall_officials"): FieldRule("contacts", "low", "Overall official"),
    ("locations", "sites"): FieldRule("locations", "low", "Site"),
    ("references", "references"): FieldRule("other", "low", "Reference"),
    ("results", "has_results"): FieldRule("results", "high", "Results posted"),
    ("results", "modules"): FieldRule("results", "medium", "Results sections"),
    # (the results fields below are spelled out by trialwatch.monitor.results_changes)
    ("results", "unposted_events"): FieldRule("results", "high", "Results submission"),
    ("results", "participant_flow"): FieldRule("results", "medium", "Participant flow"),
    ("results", "baseline"): FieldRule("results", "medium", "Baseline characteristics"),
    ("results", "outcome_measures"): FieldRule("results", "medium", "Outcome measure results"),
    ("results", "adverse_events"): FieldRule("results", "medium", "Adverse events"),
    ("status", "expanded_access"): FieldRule("status", "medium", "Expanded access available"),
    ("sharing", "ipd_sharing"): FieldRule("other", "medium", "Plan to share participant data"),
    ("sharing", "ipd_description"): FieldRule("other", "low", "Data sharing statement"),
    ("sharing", "ipd_info_types"): FieldRule("other", "low", "Shared document type"),
    ("sharing", "ipd_time_frame"): FieldRule("other", "low", "Data sharing time frame"),
    ("sharing", "ipd_access_criteria"): FieldRule("other", "low", "Data access criteria"),
    ("sharing", "ipd_url"): FieldRule("other", "low", "Data sharing URL"),
}

# Fields holding the registry's enumerations, put into words ("Not yet recruiting"); every
# other value is the registry's free text, quoted as written ("FDA", "GLIOMAX-101").
ENUM_FIELDS = {
    ("status", "overall_status"), ("status", "last_known_status"),
    ("design", "study_type"), ("design", "phases"), ("design", "allocation"),
    ("design", "intervention_model"), ("design", "primary_purpose"), ("design", "masking"),
    ("design", "observational_model"), ("design", "time_perspective"),
    ("sponsor", "lead_sponsor_class"), ("eligibility", "sex"), ("eligibility", "std_ages"),
    ("sharing", "ipd_sharing"), ("sharing", "ipd_info_types"),
}
# Keys inside list items and tables (a site's status, a contact's role) that hold enumerations.
ENUM_KEYS = frozenset({"status", "type", "role", "class", "kind"})
# Unordered lists of plain values reported as one event (the whole list) rather than per item.
WHOLE_LIST_FIELDS = {("design", "phases"), ("results", "modules"), ("eligibility", "std_ages")}
