"""The naive approach, for comparison: one request per trial, deepdiff on raw documents.

    python -m bench.naive cold   ROOT_URL STORE.sqlite FIRST COUNT
    python -m bench.naive steady ROOT_URL STORE.sqlite FIRST COUNT

For each of COUNT watched trials (synthetic ids FIRST..): ``GET /studies/{id}``, parse, and
then ``cold``: store the raw document (one commit per trial); ``steady``: load the stored
document and ``DeepDiff`` it against the fetched one, storing the new one when they differ.
Same libraries as trialwatch (httpx, orjson, SQLite); only the approach differs. Prints
``{"seconds", "requests", "trials", "changed"}``; the harness runs it on a subset and
extrapolates linearly (it is linear: one request and one diff per trial).
"""

from __future__ import annotations

import sqlite3
import sys
import time

import httpx
import orjson
from deepdiff import DeepDiff

from bench.synthetic import nct_of


def run(mode: str, base_url: str, store: str, first: int, count: int) -> dict[str, float | int]:
    db = sqlite3.connect(store)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS docs (nct_id TEXT PRIMARY KEY, doc BLOB)")
    changed = 0
    with httpx.Client(timeout=60.0, headers={"Accept": "application/json"}) as client:
        started = time.perf_counter()
        for i in range(first, first + count):
            nct_id = nct_of(i)
            response = client.get(f"{base_url}/studies/{nct_id}", params={"format": "json"})
            response.raise_for_status()
            document = orjson.loads(response.content)
            if mode == "steady":
                row = db.execute("SELECT doc FROM docs WHERE nct_id = ?", (nct_id,)).fetchone()
                previous = orjson.loads(row[0]) if row else {}
                if not DeepDiff(previous, document):
                    continue
            changed += 1
            db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?)",
                       (nct_id, orjson.dumps(document)))
            db.commit()
        seconds = time.perf_counter() - started
    db.close()
    return {"seconds": seconds, "requests": count, "trials": count, "changed": changed}


def main() -> None:
    mode, base_url, store, first, count = sys.argv[1:6]
    result = run(mode, base_url, store, int(first), int(count))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
