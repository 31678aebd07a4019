"""The daemon's counters, served to Prometheus, and its health check (``run --metrics-port``).

``Metrics`` is a thread-safe tally the daemon's jobs update; ``MetricsServer`` is a stdlib
``http.server`` thread on 127.0.0.1 serving it (no dependency):

* ``GET /metrics`` - Prometheus text format 0.0.4: ``trialwatch_cycles_total{outcome}``,
  ``trialwatch_events_total``, ``trialwatch_cycle_failures_total``,
  ``trialwatch_deliveries_total{result}``, ``trialwatch_cycle_duration_seconds`` (last
  cycle), ``trialwatch_last_cycle_timestamp_seconds`` (when it finished). Counters count
  since the daemon started, as Prometheus expects.
* ``GET /healthz`` - ``200 ok``; ``503`` with the reason when the last cycle failed, when
  the checks are failing (``[alerts] failing_after`` failed cycles in a row:
  ``trialwatch.monitor.health``), or when the next cycle is overdue by more than two
  periods: no cycle has finished by the third scheduled time after the last finished one
  (or after start-up). The lines after the first name each failing subject (``checks``,
  ``channel:<name>``) with since when and why; a failing channel alone keeps it 200.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trialwatch.monitor.events import iso_utc

__all__ = ["CYCLE_OUTCOMES", "DELIVERY_RESULTS", "Metrics", "MetricsServer"]

CYCLE_OUTCOMES = ("ok", "partial", "failed")
DELIVERY_RESULTS = ("delivered", "retried", "dead")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OVERDUE_AFTER_FIRES = 3

#: Given a moment, the next scheduled cycle strictly after it (None: no more cycles).
NextFire = Callable[[datetime], datetime | None]
#: The monitor's own health as stored: (healthy, one line per failing subject).
MonitorHealth = Callable[[], tuple[bool, list[str]]]


class Metrics:
    """Counters and last-cycle gauges; every method is safe to call from any thread."""

    def __init__(self, *, next_fire: NextFire | None = None,
                 clock: Callable[[], float] = time.time,
                 monitor_health: MonitorHealth | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_fire = next_fire
        self._monitor_health = monitor_health
        self.started_at = clock()
        self.cycles = dict.fromkeys(CYCLE_OUTCOMES, 0)
        self.deliveries = dict.fromkeys(DELIVERY_RESULTS, 0)
        self.events = 0
        self.failures = 0
        self.last_outcome: str | None = None
        self.last_duration: float | None = None
        self.last_finished: float | None = None

    def record_cycle(self, outcome: str, *, events: int, failures: int, duration: float,
                     finished_at: float | None = None) -> None:
        with self._lock:
            self.cycles[outcome] = self.cycles.get(outcome, 0) + 1
            self.events += events
            self.failures += failures
            self.last_outcome = outcome
            self.last_duration = duration
            self.last_finished = finished_at if finished_at is not None else self._clock()

    def record_delivery(self, *, delivered: int, retried: int, dead: int) -> None:
        with self._lock:
            self.deliveries["delivered"] += delivered
            self.deliveries["retried"] += retried
            self.deliveries["dead"] += dead

    def render(self) -> str:
        """Everything in Prometheus text exposition format."""
        with self._lock:
            lines = _family("trialwatch_cycles_total", "counter",
                            "Fetch cycles finished, by outcome.",
                            [(f'{{outcome="{k}"}}', v) for k, v in self.cycles.items()])
            lines += _family("trialwatch_events_total", "counter",
                             "Change events detected by fetch cycles.", [("", self.events)])
            lines += _family("trialwatch_cycle_failures_total", "counter",
                             "Registry batches, queries and records that failed in cycles.",
                             [("", self.failures)])
            lines += _family("trialwatch_deliveries_total", "counter",
                             "Alert delivery attempts, by result.",
                             [(f'{{result="{k}"}}', v) for k, v in self.deliveries.items()])
            if self.last_duration is not None:
                lines += _family("trialwatch_cycle_duration_seconds", "gauge",
                                 "Duration of the last fetch cycle.",
                                 [("", round(self.last_duration, 3))])
            if self.last_finished is not None:
                lines += _family("trialwatch_last_cycle_timestamp_seconds", "gauge",
                                 "Unix time the last fetch cycle finished.",
                                 [("", round(self.last_finished, 3))])
        return "\n".join(lines) + "\n"

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """(healthy, reason): unhealthy when the last cycle failed, the checks are failing or
        cycles are overdue; then one line per failing subject of the monitor's health."""
        healthy, reason = self._cycle_health(now)
        if self._monitor_health is None:
            return healthy, reason
        try:
            stored_ok, lines = self._monitor_health()
        except Exception as exc:  # the database is away: say so, judge by the cycles alone
            stored_ok, lines = True, [f"monitor health unknown: {type(exc).__name__}"]
        if healthy and not stored_ok:
            healthy, reason = False, "checks failing"
        return healthy, "\n".join([reason, *lines])

    def _cycle_health(self, now: float | None) -> tuple[bool, str]:
        with self._lock:
            outcome, reference = self.last_outcome, self.last_finished or self.started_at
        if outcome == "failed":
            return False, "last cycle failed"
        if self._next_fire is not None:
            moment = datetime.fromtimestamp(reference, UTC)
            deadline: datetime | None = moment
            for _ in range(OVERDUE_AFTER_FIRES):
                deadline = self._next_fire(deadline) if deadline is not None else None
            current = self._clock() if now is None else now
            if deadline is not None and current > deadline.timestamp():
                return False, f"cycle overdue: none finished since {iso_utc(moment)}"
        return True, "ok"


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
            ) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsServer:
    """``/metrics`` and ``/healthz`` on 127.0.0.1:``port`` (0: any free port) in a thread."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
        owner = metrics

        class Handler(_Handler):
            metrics = owner

        self._server = ThreadingHTTPServer((host, port), Handler)  # OSError: port taken
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="trialwatch-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=2)
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    server_version = "trialwatch"

    def do_HEAD(self) -> None:
        """Like GET, without the body (load balancers and ``curl -I`` probe this way)."""
        self.do_GET(with_body=False)

    def do_GET(self, with_body: bool = True) -> None:
        self._with_body = with_body
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, self.metrics.render(), CONTENT_TYPE)
        elif path == "/healthz":
            healthy, reason = self.metrics.health()
            self._reply(200 if healthy else 503, reason + "\n", "text/plain; charset=utf-8")
        else:
            self._reply(404, "not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, text: str, content_type: str) -> None:
        body = text.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if getattr(self, "_with_body", True):
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not log-worthy
        pass
