"""Health: ok, degraded or failing, with the reasons, judged from a `Snapshot`.

The rules (docs/operations.md repeats them for operators):

failing (HTTP 503: the agent is not doing its job; page someone)
- the data does not flow: a poll loop, the committer or the uplink hangs (the
  systemd watchdog's pings stop too);
- the store cannot write (disk full, I/O error): readings are only in memory;
- no device has been up for `devices_down_s` (every device down, or none
  ever came up since start);
- the uplink has been disconnected for `uplink_down_s`, or connected while
  nothing it sent was delivered (the broker refuses) for as long.

degraded (HTTP 200: it works, but something needs a look)
- a device is down (for less time than the above, or others are up);
- the uplink is disconnected, or delivers nothing (for less than `uplink_down_s`);
- messages wait in the store (a back-log: an outage is being back-filled);
- the system clock is not synchronised (samples' times may be wrong).

ok (HTTP 200): none of the above.

Why a back-log is only "degraded": the store exists to hold an outage and the
agent back-fills by itself; an operator needs to know, not to act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from edge_agent.service.snapshot import Snapshot, UplinkSnapshot

State = Literal["ok", "degraded", "failing"]

DEVICES_DOWN_S: Final = 300.0
UPLINK_DOWN_S: Final = 600.0
UNDELIVERED_S: Final = 30.0
"""A connected uplink that delivered nothing of what waits for this long is degraded."""


@dataclass(frozen=True, slots=True)
class HealthLimits:
    devices_down_s: float = DEVICES_DOWN_S
    """No device up for this long: failing."""
    uplink_down_s: float = UPLINK_DOWN_S
    """Uplink down for this long: failing."""


@dataclass(frozen=True, slots=True)
class Health:
    state: State
    reasons: list[str] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 503 if self.state == "failing" else 200

    def as_json(self) -> dict[str, Any]:
        return {"status": self.state, "reasons": self.reasons}


def judge(snapshot: Snapshot, limits: HealthLimits) -> Health:
    """Failing reasons first, then degraded ones; the state is the worst that applies."""
    failing, degraded = _failing(snapshot, limits), _degraded(snapshot, limits)
    if failing:
        return Health("failing", failing + degraded)
    return Health("degraded", degraded) if degraded else Health("ok")


def _failing(snapshot: Snapshot, limits: HealthLimits) -> list[str]:
    reasons = []
    if snapshot.stalled is not None:
        reasons.append(f"the data does not flow: {snapshot.stalled}")
    if snapshot.store.write_error is not None:
        reasons.append(f"the store cannot write: {snapshot.store.write_error}")
    devices = snapshot.devices
    if devices and all(d.link == "down" for d in devices):
        down_for = min(d.link_for_s for d in devices)
        if down_for >= limits.devices_down_s:
            reasons.append(f"no device up for {duration(down_for)}")
    uplink = snapshot.uplink
    if not uplink.connected and uplink.state_for_s >= limits.uplink_down_s:
        reasons.append(f"uplink down for {duration(uplink.state_for_s)}")
    if uplink.connected and uplink.undelivered_for_s >= limits.uplink_down_s:
        reasons.append(_undelivered(uplink))
    return reasons


def _degraded(snapshot: Snapshot, limits: HealthLimits) -> list[str]:
    reasons = [
        f"device {d.name} down for {duration(d.link_for_s)}" + (f": {d.reason}" if d.reason else "")
        for d in snapshot.devices
        if d.link == "down"
    ]
    uplink = snapshot.uplink
    if not uplink.connected and uplink.state_for_s < limits.uplink_down_s:
        reasons.append(f"uplink down for {duration(uplink.state_for_s)}")
    if uplink.connected and UNDELIVERED_S <= uplink.undelivered_for_s < limits.uplink_down_s:
        reasons.append(_undelivered(uplink))
    store = snapshot.store
    if store.backlog_messages:
        age = ""
        if store.oldest_ms is not None:
            age = f", oldest sampled {duration((snapshot.taken_ms - store.oldest_ms) / 1000)} ago"
        reasons.append(f"{store.backlog_messages} messages wait in the store{age}")
    if not snapshot.clock_synced:
        reasons.append("the system clock is not synchronised")
    return reasons


def duration(seconds: float) -> str:
    """A duration a technician reads at a glance: 45 s, 12 min, 3.5 h, 2.1 days."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _undelivered(uplink: UplinkSnapshot) -> str:
    """A connected uplink that delivers nothing, with the broker's refusal if it gave one."""
    refusing = f"; the broker refuses: {uplink.refusal}" if uplink.refusal else ""
    return f"nothing delivered for {duration(uplink.undelivered_for_s)}{refusing}"
