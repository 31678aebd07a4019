"""A client-side rate limiter that keeps trialwatch polite to the registry.

``RateLimiter`` is a token bucket: it lets ``burst`` requests through at once, then one more
every ``1 / rate`` seconds. With the default ``burst=1`` it is a minimum interval between
requests. A rate of zero or less disables it (benchmarks, tests).

Clock and sleep are injectable, so tests can check the spacing without waiting::

    limiter = RateLimiter(2.0, clock=fake.now, sleep=fake.sleep)
    limiter.acquire()   # returns 0.0: the first request goes straight through
    limiter.acquire()   # sleeps 0.5 s, returns 0.5

It is safe to share between threads: each caller reserves its slot under a lock, then sleeps
outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token bucket: at most ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated: float | None = None

    @property
    def unlimited(self) -> bool:
        """True when the limiter never waits (``rate <= 0``)."""
        return self.rate <= 0

    def acquire(self) -> float:
        """Wait until a request may be sent; return how many seconds were spent waiting."""
        if self.unlimited:
            return 0.0
        with self._lock:
            now = self._clock()
            if self._updated is not None:
                elapsed = max(0.0, now - self._updated)
                self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
            # Take the token now, even if that drives the bucket negative: the debt is this
            # caller's wait, and later callers queue up behind it.
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def copy(self) -> RateLimiter:
        """A limiter that continues from this one's state (for a worker process that sends
        this client's requests for a while: ``time.monotonic`` is system-wide)."""
        twin = RateLimiter(self.rate, burst=self.burst, clock=self._clock, sleep=self._sleep)
        with self._lock:
            twin._tokens, twin._updated = self._tokens, self._updated
        return twin

    def note_request(self) -> None:
        """Count a request sent elsewhere just now (by such a worker): the next ``acquire``
        waits a full interval from now."""
        if self.unlimited:
            return
        with self._lock:
            self._tokens, self._updated = min(self._tokens, 0.0), self._clock()
