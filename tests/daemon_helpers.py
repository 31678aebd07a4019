"""Helpers for the service tests: a real webhook receiver, the daemon as a subprocess, config.

``WebhookReceiver`` is a stdlib HTTP server on 127.0.0.1 that records every POST; it can
answer with another status (``status = 500``) or hold each request (``delay``) to keep a
delivery in flight. ``DaemonProcess`` runs ``python -m trialwatch.monitor.cli ...`` with its stderr
(JSON
log lines) in a file, and polls it: every wait has a timeout, none is a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
FIXTURE_NCT = "NCT03934567"


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included (``/healthz`` answers 503)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def poll(check: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver answered."""

    headers: dict[str, str]
    body: dict[str, Any]
    status: int


class WebhookReceiver:
    """Records POSTs; ``status`` is the answer, ``delay`` how long each request is held."""

    def __init__(self) -> None:
        self.status = 204
        self.delay = 0.0
        self.arrived = 0  # requests seen, including those still being held
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.arrived += 1
                    status, delay = receiver.status, receiver.delay
                if delay and receiver._closing.wait(delay):
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.deliveries.append(Delivery(headers, body, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/trialwatch"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def accepted(self) -> list[Delivery]:
        """Deliveries answered with a 2xx."""
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def answered(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)


def trialwatch(*args: str) -> list[str]:
    """The command line of ``trialwatch ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "trialwatch.monitor.cli", *args]


def base_env(**extra: str) -> dict[str, str]:
    """The test's environment without the developer's TRIALWATCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env.update(extra)
    return env


def write_config(path: Path, *, registry_url: str, hook_url: str, interval: str = "1s",
                 extra: str = "") -> Path:
    """A trialwatch.toml: one watched trial, a webhook channel wanting status events."""
    path.write_text(f"""\
[ctgov]
base_url = "{registry_url}"
requests_per_second = 0
max_retries = 0

[schedule]
interval = "{interval}"

[watch]
trials = ["{FIXTURE_NCT}"]

[channels.hook]
type = "webhook"
url = "{hook_url}"
secret_env = "TW_TEST_WEBHOOK_SECRET"

[[subscriptions]]
channel = "hook"
kinds = ["status"]

[delivery]
interval = "1s"
backoff = "1s"
{extra}""")
    return path


class DaemonProcess:
    """``trialwatch ... run`` (or any command) in the background, logs in ``<dir>/name.err``."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], workdir: Path,
                 name: str = "daemon") -> None:
        self.err_path = workdir / f"{name}.err"
        self.out_path = workdir / f"{name}.out"
        with self.err_path.open("wb") as err, self.out_path.open("wb") as out:
            self.process = subprocess.Popen(list(args), env=dict(env), cwd=workdir,
                                            stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        entries = []
        for line in self.stderr().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "event" in entry:
                entries.append(entry)
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e["event"] == name]

    def wait_for_log(self, name: str, *, count: int = 1, timeout: float = 8.0,
                     where: Callable[[dict[str, Any]], bool] = lambda _e: True
                     ) -> dict[str, Any]:
        """The ``count``-th log entry named ``name`` matching ``where``."""
        def found() -> dict[str, Any] | None:
            if self.process.poll() is not None and len(matching()) < count:
                raise AssertionError(f"daemon exited ({self.process.returncode}) before "
                                     f"{name}: {self.stderr()[-2000:]}")
            entries = matching()
            return entries[count - 1] if len(entries) >= count else None

        def matching() -> list[dict[str, Any]]:
            return [e for e in self.events(name) if where(e)]

        return poll(found, timeout, f"log {name} x{count}")

    def signal(self, number: int = signal.SIGTERM) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
