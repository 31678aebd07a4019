"""trialwatch's domain and service, installed as ``trialwatch.monitor``.

The folders follow the pipeline: ``sources`` (registry client, parsers) give a canonical
``record``; ``diff`` turns two records into ``events``; ``versioning`` stores a version with
its events and alerts; ``cycle`` is one scheduled pass over the watch list; ``service``
runs cycles and deliveries as a daemon; ``cli`` and ``web`` are the ways in. ``config``
reads ``trialwatch.toml``.
"""

__version__ = "0.1.0"
