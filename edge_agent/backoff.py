"""Capped exponential backoff with jitter: the one backoff of every retry in the agent
(device reconnects, a demoted Modbus unit's probes, broker rounds and takeovers)."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double up to `cap`, never shorter than `first`, drawn at random.

    Full jitter (the default): each delay in [first, d], d doubling from `first`;
    a retry soon after a short glitch stays possible at every step. Equal jitter
    (`equal_jitter=True`): each delay in [d/2, d], d doubling from 2 x `first`;
    the wait surely grows, for retries that must calm something down (two
    gateways taking over one client id). Either way the jitter keeps a fleet of
    gateways (or the devices of one) from retrying in lock-step after a shared
    outage, and `reset()` after a success makes the next failure retry quickly.
    With equal jitter a `cap` below `first` wins: delays in [cap/2, cap].
    """

    def __init__(
        self,
        first: float,
        cap: float,
        rng: random.Random | None = None,
        *,
        equal_jitter: bool = False,
    ) -> None:
        self._equal = equal_jitter
        self._first = first
        self._cap = cap if equal_jitter else max(cap, first)
        self._start = min(2 * first, cap) if equal_jitter else first
        self._ceiling = self._start
        self._rng = rng or random.Random()

    def next(self) -> float:
        low = self._ceiling / 2 if self._equal else self._first
        delay = self._rng.uniform(low, self._ceiling)
        self._ceiling = min(self._ceiling * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._ceiling = self._start
