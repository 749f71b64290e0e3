"""A byte-rate limit for back-fill (the province's `backfill_rate`)."""

from __future__ import annotations

import time
from collections.abc import Callable


class ByteRate:
    """A token bucket in bytes: a message may go while the bucket is not in debt.

    A message larger than a second's worth still goes, and puts the bucket in
    debt for as long as it takes to pay it back, so the long-run rate holds
    without splitting messages.
    """

    def __init__(self, bytes_per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = bytes_per_s
        self._clock = clock
        self._tokens = float(bytes_per_s)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._tokens + (now - self._at) * self._rate, float(self._rate))
        self._at = now

    def allows(self) -> bool:
        self._refill()
        return self._tokens >= 0

    def spend(self, size: int) -> None:
        self._refill()
        self._tokens -= size

    def wait_s(self) -> float:
        """How long until `allows()` is true again."""
        self._refill()
        return max(-self._tokens / self._rate, 0.0)
