"""A token bucket: the per-connection message rate limit of PROTOCOL.md section 1, and the per-connection
budget of pushed audio bytes (section 6.1)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per message (or ``amount`` tokens:
    bytes of pushed audio).

    Plain and clock-injected, so it is tested without sleeping.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = float(rate)
        self._burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    def try_take(self, amount: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False
