"""Real local receivers for alerts: an HTTP webhook receiver and an SMTP mailbox (aiosmtpd).

Both run on 127.0.0.1 in background threads and record what they got, so tests (and the
daemon tests, which run trialwatch as a subprocess) assert on real deliveries.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class WebhookReceiver:
    """Records POSTs; answers ``status`` (after ``fail_times`` answers of ``fail_status``)."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    status: int = 204
    fail_times: int = 0
    fail_status: int = 500
    location: str | None = None
    delay: float = 0.0

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Poll until at least ``count`` requests arrived (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.requests)


@contextmanager
def webhook_receiver(path: str = "/hooks/trialwatch") -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with lock:
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(state.requests) <= state.fail_times
            if state.delay:
                time.sleep(state.delay)
            self.send_response(state.fail_status if failing else state.status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Mailbox:
    """What the SMTP server received: envelopes, and the logins it saw."""

    envelopes: list[Any] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [
            message_from_bytes(e.original_content, _class=EmailMessage, policy=default_policy)
            for e in self.envelopes
        ]


@contextmanager
def smtp_mailbox(box: Mailbox | None = None, **controller_options: Any) -> Iterator[Mailbox]:
    """A real aiosmtpd server on 127.0.0.1 delivering into ``box``."""
    box = box or Mailbox()
    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port, **controller_options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
