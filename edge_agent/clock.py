"""Is the system clock to be trusted? Synchronisation and steps, for `state.clock`.

API:

    watch = ClockWatch()
    status = watch.check()    # e.g. on every `state` and every few seconds
    status.synced             # -> state "clock": "synced" / "unsynced"
    status.stepped_by_s       # the wall clock jumped by this much since the last check

uplink-v1 says readings sampled while the clock is unsynchronised must not
carry a made-up time as if it were good: gateways often have no RTC battery
and boot in 1970 until NTP answers. What the runtime does with an unsynced
clock (hold, or q=1) is its choice; this module only tells.

How synchronisation is known:
1. The kernel's NTP state, read with adjtimex(2) in read-only mode (modes 0, no
   privilege needed): the clock is unsynchronised when the call returns
   TIME_ERROR or the status has STA_UNSYNC. systemd-timesyncd, chrony and ntpd
   all clear STA_UNSYNC once they have disciplined the clock; it is what
   `timedatectl` shows as "System clock synchronized".
2. Only when adjtimex cannot be called (a seccomp filter, a non-Linux libc):
   systemd-timesyncd's marker /run/systemd/timesync/synchronized.
3. $EDGE_AGENT_CLOCK=synced or =unsynced overrides both (`clock_source`): for a
   clock disciplined where the kernel cannot see it (PTP with phc2sys, a GPS
   receiver feeding the clock directly), for a container whose host keeps the
   time, and for tests, which must not depend on the machine's NTP state.

How a step is seen: between two checks the wall clock must advance as much as
CLOCK_BOOTTIME (which, unlike CLOCK_MONOTONIC, also counts a suspend). NTP
slews at most 500 ppm, so a difference beyond `step_threshold_s` is a step
(NTP's first sync after a cold boot, an operator's `date -s`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

TIME_ERROR: Final = 5
"""adjtimex's return value when the clock is not synchronised."""
STA_UNSYNC: Final = 0x0040
TIMESYNCD_MARKER: Final = Path("/run/systemd/timesync/synchronized")
STEP_THRESHOLD_S: Final = 1.0
CLOCK_ENV: Final = "EDGE_AGENT_CLOCK"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux), padding included; only `status` is read."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@functools.cache
def _adjtimex() -> Callable[..., int] | None:
    """libc's adjtimex, looked up once: find_library runs ldconfig, far too slow per check."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(libc_name, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    return function


def kernel_synced() -> bool | None:
    """The kernel's view via adjtimex(2); None when the call is not available."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    timex = _Timex()  # modes 0: read only
    state = adjtimex(ctypes.byref(timex))
    if state == -1:
        return None  # EPERM from a seccomp filter: fall back to the marker
    return state != TIME_ERROR and not timex.status & STA_UNSYNC


def system_clock_synced(marker: Path = TIMESYNCD_MARKER) -> bool:
    """The kernel's answer, or failing that whether systemd-timesyncd left its marker."""
    synced = kernel_synced()
    return marker.exists() if synced is None else synced


def clock_source(environ: Mapping[str, str] = os.environ) -> Callable[[], bool]:
    """Whether the clock is synchronised: the system's answer, unless $EDGE_AGENT_CLOCK says.

    Raises ValueError for a value other than kernel, synced or unsynced.
    """
    setting = environ.get(CLOCK_ENV, "kernel")
    if setting == "kernel":
        return system_clock_synced
    if setting in ("synced", "unsynced"):
        fixed = setting == "synced"
        return lambda: fixed
    raise ValueError(f"{CLOCK_ENV}={setting!r}: write kernel (the default), synced or unsynced")


@dataclass(frozen=True, slots=True)
class ClockStatus:
    synced: bool
    stepped_by_s: float | None
    """Wall-clock jump since the previous check (positive: forward); None when none."""

    @property
    def state(self) -> str:
        """The `clock` field of `state`."""
        return "synced" if self.synced else "unsynced"


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class ClockWatch:
    """Checks synchronisation and notices steps between two checks."""

    def __init__(
        self,
        step_threshold_s: float = STEP_THRESHOLD_S,
        wall: Callable[[], float] = time.time,
        elapsed: Callable[[], float] = _boottime,
        synced: Callable[[], bool] = system_clock_synced,
    ) -> None:
        self._threshold = step_threshold_s
        self._wall = wall
        self._elapsed = elapsed
        self._synced = synced
        self._offset = wall() - elapsed()

    def check(self) -> ClockStatus:
        offset = self._wall() - self._elapsed()
        step = offset - self._offset
        self._offset = offset
        return ClockStatus(self._synced(), step if abs(step) > self._threshold else None)
