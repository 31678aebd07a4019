"""One fetch cycle, stage by stage: listing → queries → fetching → recording (→ workers).

``run.run_cycle`` is the entry point (what ``check`` and the daemon call); it hands one
``report.CycleReport`` to each stage. ``workers`` is the shared-round path on PostgreSQL;
``watchlist`` keeps the database's watch list in step with ``[watch]``.
"""
