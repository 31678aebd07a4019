"""The floor: the least any client could do for a cycle's HTTP requests.

    python -m bench.floor ROOT < targets.json      # ROOT = http://127.0.0.1:PORT

Replays exactly the request targets (path + query, page tokens included) a trialwatch cycle
sent, in order, over one keep-alive ``httpx`` connection, and does only what no client can
skip: parse each JSON answer, and SHA-256 each full study document fetched. No database, no
canonical record, no diff. Prints ``{"seconds", "requests", "documents", "bytes"}``.
"""

from __future__ import annotations

import hashlib
import sys
import time

import httpx
import orjson


def replay(root: str, targets: list[str]) -> dict[str, float | int]:
    documents = size = 0
    with httpx.Client(timeout=60.0, headers={"Accept": "application/json"}) as client:
        started = time.perf_counter()
        for target in targets:
            response = client.get(root + target)
            response.raise_for_status()
            size += len(response.content)
            body = orjson.loads(response.content)
            path = target.split("?", 1)[0]
            full = "fields=" not in target
            if full and path.endswith("/studies"):
                for study in body["studies"]:
                    hashlib.sha256(orjson.dumps(study)).hexdigest()
                    documents += 1
            elif full and "/studies/" in path:
                hashlib.sha256(orjson.dumps(body)).hexdigest()
                documents += 1
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "requests": len(targets), "documents": documents,
            "bytes": size}


def main() -> None:
    targets = orjson.loads(sys.stdin.buffer.read())
    result = replay(sys.argv[1], targets)
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
