"""ClinicalTrials.gov: the API v2 ``client`` (with its result and error ``types`` and a
``ratelimit``), the study-document ``parser`` and the website's version ``history``."""
