"""trialwatch's domain and service: records, sources, diff, cycle, daemon, CLI and config."""

__version__ = "0.1.0"
