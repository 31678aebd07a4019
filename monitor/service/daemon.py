"""The ``trialwatch run`` service: scheduled fetch cycles and outbox delivery until a signal.

    main thread ─ config ─ lock ─ schema check ─ scheduler.start() ─ wait for a signal ─ stop
    scheduler   ─ "cycle" job (schedule.interval or schedule.cron; first run at start):
                  sync [watch] ─► run_cycle ─► deliver
                └ "deliver" job (every delivery.interval): queue the due digests
                  (``trialwatch.monitor.digests``), deliver due alerts

APScheduler 3 ``BackgroundScheduler`` with two worker threads. Both jobs coalesce missed
runs into one and never overlap themselves (``max_instances=1``); a missed cycle still runs
if it is less than one period late (``misfire_grace_time`` = the period), a missed delivery
only if less than one delivery interval late. Deliveries never run concurrently.

Stopping: the SIGTERM / SIGINT handler only records the signal (it takes no lock). The main
thread then sets the stop event, which makes the registry client's waits return at once and
its next request fail, so a running cycle abandons its remaining batches *between*
transactions: every stored version has its events and outbox rows, and the trials not
reached are fetched by the next cycle. A running delivery finishes. Then one last delivery,
the database is closed, the lock released, exit 0. A second signal exits at once with
128 + the signal number; SQLite discards any transaction left open.

``next_cycle`` for ``status``: the main thread copies the cycle job's next run time into
the SQLite lock file (``trialwatch.monitor.service.lock``). On PostgreSQL, where there is no lock
file,
``status`` reports the last cycle's start plus the schedule instead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from trialwatch.monitor import __version__
from trialwatch.monitor.errors import CommandError
from trialwatch.monitor.service.lock import AlreadyRunning, ServiceLock, lock_path_for
from trialwatch.monitor.service.metrics import Metrics, MetricsServer, NextFire

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.base import BaseTrigger

    from trialwatch.monitor.config.settings import ScheduleConfig
    from trialwatch.monitor.cycle.run import CycleReport
    from trialwatch.monitor.service.context import App
    from trialwatch.storage.engine import Database

__all__ = ["Daemon", "cycle_trigger", "describe_schedule", "next_fire_function", "run_service"]

log = structlog.get_logger("trialwatch.daemon")

CYCLE_JOB = "cycle"
DELIVERY_JOB = "deliver"
POLL_SECONDS = 0.1  # how often the main thread looks at the signal flag


def run_service(app: App, *, once: bool = False, metrics_port: int | None = None) -> int:
    """``trialwatch run``: the daemon (or one cycle with ``once``); returns the exit code."""
    config = app.config  # a bad file: one line naming the key, before anything starts
    _configure_logging(app)
    app.channels  # noqa: B018 - channel settings and secret variables are checked up front
    trigger = cycle_trigger(config.schedule)
    lock_path = lock_path_for(config.database.url)
    lock = None
    if lock_path is not None:
        database = str(lock_path.with_suffix(""))
        try:
            lock = ServiceLock.acquire(lock_path, database)
        except AlreadyRunning as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{lock_path}: cannot create the lock file: {exc.strerror}"
                               ) from None
    server: MetricsServer | None = None
    presence = None
    try:
        db = app.database(create_if_empty=True)  # refuses an outdated schema: `db upgrade`
        if not once:  # on PostgreSQL, `status` reports a next cycle only while this runs
            from trialwatch.storage.presence import announce_daemon

            presence = announce_daemon(db)
        metrics = Metrics(next_fire=next_fire_function(trigger),
                          monitor_health=stored_health(db))
        if metrics_port is not None:
            try:
                server = MetricsServer(metrics, metrics_port).start()
            except OSError as exc:
                raise CommandError(f"--metrics-port {metrics_port}: cannot listen on "
                                   f"127.0.0.1:{metrics_port}: {exc.strerror}") from None
        daemon = Daemon(app, trigger=trigger, lock=lock, metrics=metrics,
                        metrics_port=server.port if server else None)
        if once:
            return daemon.run_once()
        code = daemon.serve()
    finally:
        if server is not None:
            server.stop()
        if presence is not None:
            presence.release()
        app.close()
        if lock is not None:
            lock.release()
    log.info("daemon.stopped", exit_code=code, cycles=daemon.cycles_run,
             uptime_s=round(time.time() - metrics.started_at, 1))
    return code


class Daemon:
    """The scheduler, its two jobs and the stop protocol for one ``App``."""

    def __init__(self, app: App, *, trigger: BaseTrigger, lock: ServiceLock | None = None,
                 metrics: Metrics | None = None, metrics_port: int | None = None) -> None:
        self.app = app
        self.trigger = trigger
        self.lock = lock
        self.metrics = metrics or Metrics(next_fire=next_fire_function(trigger))
        self.metrics_port = metrics_port
        self.stop = threading.Event()
        self.signal: int | None = None  # set by the signal handler, read by the main thread
        self.cycles_run = 0
        self._delivery_lock = threading.Lock()
        self._worker = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self._scheduler: BackgroundScheduler | None = None

    # ------------------------------------------------------------------ steps

    def cycle(self) -> CycleReport | None:
        """Sync ``[watch]``, then one fetch cycle; None when it crashed (logged)."""
        from trialwatch.monitor.cycle.run import run_cycle
        from trialwatch.monitor.cycle.watchlist import sync_declared_watches

        started = time.monotonic()
        try:
            db = self.app.database()
            sync_declared_watches(db, self.app.config)
            client = self.app.registry_client(transport=StopAwareTransport(self.stop),
                                              sleep=self._sleep)
            with client:
                report = run_cycle(db, client, subscriptions=self.app.subscriptions,
                                   worker=self._worker, should_stop=self.stop.is_set,
                                   reverify_every=self.app.config.ctgov.reverify_every,
                                   failing_after=self.app.config.alerts.failing_after)
        except Exception as exc:  # a database fault: log it, the next cycle tries again
            log.error("cycle.crashed", error_type=type(exc).__name__, error=_one_line(exc))
            self.metrics.record_cycle("failed", events=0, failures=1,
                                      duration=time.monotonic() - started)
            return None
        self.cycles_run += 1
        finished = report.finished_at.timestamp() if report.finished_at else None
        self.metrics.record_cycle(report.outcome, events=len(report.events),
                                  failures=len(report.failures),
                                  duration=time.monotonic() - started, finished_at=finished)
        return report

    def deliver(self) -> None:
        """Deliver every due alert once (never two deliveries at a time)."""
        with self._delivery_lock:
            try:
                report = self.app.deliver_pending()
            except Exception as exc:
                log.error("delivery.crashed", error_type=type(exc).__name__,
                          error=_one_line(exc))
                return
        if report is None:
            return
        self.metrics.record_delivery(delivered=report.delivered, retried=report.retried,
                                     dead=report.dead)
        if report.delivered or report.retried or report.dead:
            log.info("delivery.finished", **report.to_json())

    def _sleep(self, seconds: float) -> None:
        """The registry client's sleep (rate limit, retry backoff): cut short by a stop."""
        self.stop.wait(seconds)

    # ------------------------------------------------------------------ modes

    def run_once(self) -> int:
        """One cycle and a delivery; 0 when the cycle was ok, 1 otherwise."""
        result: list[CycleReport | None] = []

        def body() -> None:
            result.append(self.cycle())
            self.deliver()

        worker = threading.Thread(target=body, name="trialwatch-once")
        with handle_signals(self):
            worker.start()
            while worker.is_alive():
                worker.join(POLL_SECONDS)
                if self.signal is not None and not self.stop.is_set():
                    log.info("daemon.stopping", signal=signal.Signals(self.signal).name)
                    self.stop.set()
        report = result[0] if result else None
        return 0 if report is not None and report.outcome == "ok" else 1

    def serve(self) -> int:
        """Run the scheduler until SIGTERM / SIGINT; returns 0 after a clean stop."""
        scheduler = self._build_scheduler()
        with handle_signals(self), _scheduler_logs_to_structlog():
            scheduler.start()
            self._scheduler = scheduler
            self._publish_next_cycle()
            config = self.app.config
            log.info("daemon.started", version=__version__, pid=os.getpid(),
                     database=self.app.database().url,
                     schedule=describe_schedule(config.schedule),
                     delivery_interval_s=config.delivery.interval.total_seconds(),
                     channels=sorted(config.channels), worker=self._worker,
                     lock=str(self.lock.path) if self.lock else None,
                     metrics_port=self.metrics_port)
            while self.signal is None:
                time.sleep(POLL_SECONDS)
                self._publish_next_cycle()
            self.stop.set()
            log.info("daemon.stopping", signal=signal.Signals(self.signal).name)
            scheduler.shutdown(wait=True)  # a running cycle abandons between batches
            self.deliver()  # one last delivery
        return 0

    def _build_scheduler(self) -> BackgroundScheduler:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        config = self.app.config
        every = config.delivery.interval.total_seconds()
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=config.schedule.tzinfo)
        scheduler.add_job(self._cycle_job, self.trigger, id=CYCLE_JOB, name="fetch cycle",
                          next_run_time=datetime.now(UTC),
                          misfire_grace_time=max(1, int(_period(self.trigger).total_seconds())))
        scheduler.add_job(self._delivery_job, IntervalTrigger(seconds=every),
                          id=DELIVERY_JOB, name="outbox delivery",
                          misfire_grace_time=max(1, int(every)))
        return scheduler

    def _cycle_job(self) -> None:
        if self.stop.is_set():
            return
        self.cycle()
        if not self.stop.is_set():  # when stopping, the main thread delivers last
            self.deliver()

    def _delivery_job(self) -> None:
        if not self.stop.is_set():
            self.deliver()

    def _publish_next_cycle(self) -> None:
        """Main thread only: jobs must not call the scheduler (its shutdown waits for them
        while holding the job store lock)."""
        if self.lock is None or self._scheduler is None:
            return
        job = self._scheduler.get_job(CYCLE_JOB)
        self.lock.update(next_cycle=job.next_run_time if job is not None else None)


# ---------------------------------------------------------------------- helpers


class StopAwareTransport(httpx.BaseTransport):
    """An HTTP transport that refuses new requests once ``stop`` is set.

    The refusal is an ``UnsupportedProtocol`` error, which the registry client reports at
    once (no retry), so a cycle being stopped fails its remaining batches in milliseconds.
    """

    def __init__(self, stop: threading.Event, inner: httpx.BaseTransport | None = None) -> None:
        self._stop = stop
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._stop.is_set():
            raise httpx.UnsupportedProtocol("trialwatch is stopping", request=request)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def cycle_trigger(schedule: ScheduleConfig) -> BaseTrigger:
    """An APScheduler trigger for ``[schedule]``: ``cron`` (in ``timezone``) or ``interval``.

    Cron fields come from ``trialwatch.monitor.config.durations.parse_cron`` (weekdays as names),
    not from
    ``CronTrigger.from_crontab``, which numbers weekdays from Monday.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    cron = schedule.cron_schedule
    if cron is not None:
        return CronTrigger(**cron.fields(), timezone=schedule.tzinfo)
    assert schedule.interval is not None
    return IntervalTrigger(seconds=schedule.interval.total_seconds(), timezone=schedule.tzinfo)


def stored_health(db: Database) -> Callable[[], tuple[bool, list[str]]]:
    """``/healthz``'s view of ``monitor_health``: (healthy, a line per failing subject)."""
    from trialwatch.monitor.health import healthz
    from trialwatch.notifiers.health import health_rows

    def read() -> tuple[bool, list[str]]:
        with db.transaction() as session:
            return healthz(health_rows(session))

    return read


def next_fire_function(trigger: BaseTrigger) -> NextFire:
    """``f(t)``: the trigger's next fire time strictly after ``t`` (interval: ``t`` + interval)."""
    def next_fire(moment: datetime) -> datetime | None:
        fire: datetime | None = trigger.get_next_fire_time(
            moment, moment + timedelta(microseconds=1))
        return fire

    return next_fire


def _period(trigger: BaseTrigger) -> timedelta:
    """The gap between the next two cycles (the interval; for cron, as of now)."""
    next_fire = next_fire_function(trigger)
    first = next_fire(datetime.now(UTC))
    second = next_fire(first) if first is not None else None
    if first is None or second is None:
        return timedelta(hours=1)
    return second - first


def describe_schedule(schedule: ScheduleConfig) -> str:
    """``"every 6h"`` or ``"cron 0 7 * * 1-5 (Europe/Paris)"``."""
    from trialwatch.monitor.config.durations import format_duration

    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    assert schedule.interval is not None
    return f"every {format_duration(schedule.interval)}"


@contextmanager
def handle_signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM / SIGINT record a stop request; a second one exits the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if daemon.signal is not None:
            name = signal.Signals(signum).name
            os.write(2, f"trialwatch: {name} again: exiting at once\n".encode())
            os._exit(128 + signum)
        daemon.signal = signum  # nothing else here: a handler must not wait on a lock

    previous = {number: signal.signal(number, on_signal)
                for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _StructlogBridge(logging.Handler):
    """APScheduler's own warnings (missed runs, skipped overlaps) as structlog events."""

    def emit(self, record: logging.LogRecord) -> None:
        event = "scheduler.error" if record.levelno >= logging.ERROR else "scheduler.warning"
        method = log.error if record.levelno >= logging.ERROR else log.warning
        method(event, message=_one_line(record.getMessage()))


@contextmanager
def _scheduler_logs_to_structlog() -> Iterator[None]:
    logger = logging.getLogger("apscheduler")
    bridge = _StructlogBridge(logging.WARNING)
    saved = (logger.level, logger.propagate)
    logger.addHandler(bridge)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(bridge)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _configure_logging(app: App) -> None:
    """The daemon logs at ``logging.level`` (default info; env TRIALWATCH_LOG_LEVEL wins)."""
    from trialwatch.monitor.service.logs import configure_logging

    settings = app.config.logging
    fmt = app.log_format or os.environ.get("TRIALWATCH_LOG_FORMAT") or settings.format
    configure_logging(fmt, settings.level)


def _one_line(value: Any, limit: int = 500) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
