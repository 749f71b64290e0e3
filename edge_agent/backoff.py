"""Capped exponential backoff with full jitter, for reconnects of every kind."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `first` up to `cap`, each drawn at random in [first, delay].

    The jitter keeps a fleet of gateways (or the devices of one) from retrying
    in lock-step after a shared outage; `reset()` after a success makes the
    next failure retry quickly again.
    """

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        self._first = first
        self._cap = max(cap, first)
        self._ceiling = first
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._rng.uniform(self._first, self._ceiling)
        self._ceiling = min(self._ceiling * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._ceiling = self._first
