"""Configuration: ``settings`` (``trialwatch.toml`` as typed models), ``values`` (the value
types and ``ConfigError``), ``durations`` ("6h", cron) and ``database_url`` (where the
database lives, usable without loading the whole configuration)."""
