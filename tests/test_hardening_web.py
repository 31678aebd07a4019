"""Hardening over HTTP (issue 17 §3, §4): the dashboard's token and what no request can do.

``trialwatch serve`` runs as a real process on a free port over a database filled the real
way (``build_trial_database``); requests are raw HTTP (``http.client``), so a header can
carry the UTF-8 bytes a client such as curl sends. The daemon's ``/metrics`` server runs
in-process on its own port.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from receivers import free_port
from test_web import NCT, build_trial_database

from trialwatch.monitor.service.metrics import Metrics, MetricsServer

REPO = Path(__file__).resolve().parents[1]
TOKEN = "tök€n-with-ünïcode-and spaces-1234"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return {**base, **extra}


@dataclass
class Server:
    port: int
    process: subprocess.Popen[str]
    log: Path

    def request(self, method: str, target: str, headers: dict[str, str | bytes] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, \
                response.read()
        finally:
            connection.close()

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp_path: Path, *args: str) -> Server:
    db = build_trial_database(tmp_path / "data")
    url = db.engine.url.render_as_string(hide_password=False)
    db.close()
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "trialwatch.monitor.cli", "--db", url, "serve", "--port",
         str(port), *args], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
        stderr=log.open("w"), text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited: {log.read_text()}")
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return Server(port, process, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("serve did not start")


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, "--token", TOKEN)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


def serve_refusal(tmp_path: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trialwatch.monitor.cli", "--db", f"sqlite:///{tmp_path}/x.db",
         "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=env(TRIALWATCH_WEB_TOKEN=token))


# ----------------------------------------------------------------- 3. the web token

@pytest.mark.parametrize(("token", "problem"), [
    ("a", "too short"), ("fifteen-chars15", "too short"), (" " * 20, "only whitespace"),
    ("\t \n" * 6, "only whitespace")])
def test_serve_refuses_a_short_or_blank_token_in_one_line(
        tmp_path: Path, token: str, problem: str) -> None:
    result = serve_refusal(tmp_path, token)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("trialwatch: error: ")
    assert "TRIALWATCH_WEB_TOKEN" in result.stderr and problem in result.stderr


def test_a_non_latin1_token_works_in_the_query_then_as_a_cookie(guarded: Server) -> None:
    status, headers, _ = guarded.request("GET", f"/?token={quote(TOKEN)}")
    assert status == 200
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert guarded.request("GET", f"/trials/{NCT}", {"Cookie": cookie})[0] == 200
    assert "Traceback" not in guarded.logged()


def test_a_non_latin1_token_works_as_a_bearer_header(guarded: Server) -> None:
    bearer = b"Bearer " + TOKEN.encode()  # the UTF-8 bytes curl sends
    assert guarded.request("GET", "/api/trials", {"Authorization": bearer})[0] == 200
    wrong = b"Bearer " + TOKEN.replace("€", "e").encode()
    assert guarded.request("GET", "/api/trials", {"Authorization": wrong})[0] == 401


# ----------------------------------------------------------------- 4. no 500 from a client

ODD_NUMBERS = ["9223372036854775807", "9223372036854775808", "1" * 400, "-1", "0", "x",
               "1.5", "²", "%00", "1e9", " 1"]


@pytest.mark.parametrize("value", ODD_NUMBERS)
def test_odd_page_and_version_numbers_answer_400_never_500(open_server: Server,
                                                           value: str) -> None:
    value = quote(value, safe="%")
    for target in (f"/?page={value}", f"/trials/{NCT}?from={value}",
                   f"/trials/{NCT}?from=1&to={value}", f"/api/trials/{NCT}/diff?to={value}",
                   f"/api/trials/{NCT}/diff?from={value}&to=2"):
        status, _, _ = open_server.request("GET", target)
        assert status == 400, target


@pytest.mark.parametrize("target", [
    "/?q=%00", "/?status=%00", "/?query=%00", "/?kind=%00", "/changes?kind=%00",
    "/feeds/query/%00.atom", "/feeds/query/" + "x" * 5000 + ".atom",
    "/?q=" + "x" * 20000, "/trials/NCT%00", f"/trials/{NCT}?from=2&to=1", "/?page=2147483647",
    "/api/trials/NCT07328581/history?kind=" + "k" * 3000, "/%ff%fe", "/feeds/trial/x.atom",
])
def test_odd_query_and_path_values_answer_4xx_or_a_page_never_500(open_server: Server,
                                                                  target: str) -> None:
    status, _, _ = open_server.request("GET", target)
    assert status < 500, target
    assert "Traceback" not in open_server.logged()


def test_a_huge_page_number_clamps_to_an_empty_page_not_an_error(open_server: Server) -> None:
    status, _, body = open_server.request("GET", "/?page=2147483647")
    assert status == 200 and NCT not in body.decode()


def test_metrics_and_healthz_answer_head_like_get() -> None:
    server = MetricsServer(Metrics(), 0).start()
    try:
        for path in ("/metrics", "/healthz"):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", path)
            got = connection.getresponse()
            body = got.read()
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert head.read() == b""
            connection.close()
            assert head.status == got.status
            assert head.getheader("Content-Type") == got.getheader("Content-Type")
            assert head.getheader("Content-Length") == str(len(body))
    finally:
        server.stop()


def test_an_unexpected_error_in_a_route_is_a_500_page_and_one_log_line(
        open_server: Server, tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "trialwatch.db") as broken:
        broken.execute("DROP TABLE outbox")  # the database changed under the server
    status, _, body = open_server.request("GET", "/api/status")
    assert status == 500 and b"internal error" in body
    for _ in range(50):
        if "web.error" in open_server.logged():
            break
        time.sleep(0.1)
    time.sleep(1)  # the server would write a traceback after its own line
    lines = [line for line in open_server.logged().splitlines() if "serving http" not in line]
    assert len(lines) == 1 and "web.error" in lines[0] and "OperationalError" in lines[0]
    assert "Traceback" not in open_server.logged()
