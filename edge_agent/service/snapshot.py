"""What the running agent reports about itself: one `Snapshot`, taken on the event loop.

The runtime fills a `Snapshot` on demand (the HTTP server calls its
`snapshot()` callable for every request, on the loop, so the figures agree
with each other). `/metrics`, `/healthz`, `/status` and `edge-agent status`
are all built from it, so they never disagree.

API for the runtime:

    latency = PollLatency()                 # one per device
    latency.observe(seconds)                # after every poll, failed or not
    DeviceSnapshot(name, "up", link_for_s, polls, errors, reconnects, latency.snapshot())
    Snapshot(...)                           # see the fields below

Durations are seconds as of the moment the snapshot is taken (`down_for_s`),
not timestamps, so health rules need no clock of their own.

The JSON form (`as_json()`, served at /status) is read by `edge-agent status`
of the same or a later version: add fields, do not rename or retype them.

Each tag's own state (`TagSnapshot`: value, quality and why, active alarms)
is not in the `Snapshot`: it grows with the tags, and /metrics, /healthz and
STATUS need none of it. The runtime makes it only for /tags, which
`edge-agent top` and the status page at / read beside /status; its JSON form
(`tags_json`) is held to the same rule.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from edge_agent.model import Number, Quality, Value

LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the poll latency histogram: a Modbus read on a LAN takes a few
ms, a serial line tens of ms, a timing-out device its timeout (seconds)."""

QUALITY_NAMES: Final = tuple(q.name.lower() for q in Quality)
"""Keys of `Snapshot.tags_by_quality`: good, uncertain, comm, sensor, config."""

Link = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Latency:
    """A histogram: `counts[i]` polls took at most `bounds[i]` (cumulative); `count` in all."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS_S)
    count: int = 0
    sum_s: float = 0.0


class PollLatency:
    """Accumulates one device's poll durations; cheap enough for every poll."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self._bounds = bounds
        self._in_bucket = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._in_bucket[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> Latency:
        cumulative, running = [], 0
        for n in self._in_bucket[:-1]:
            running += n
            cumulative.append(running)
        return Latency(self._bounds, tuple(cumulative), sum(self._in_bucket), self._sum)


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    name: str
    link: Link
    link_for_s: float
    """How long the link has been in its current state."""
    polls: int = 0
    errors: int = 0
    """Polls that returned no good value for any of the device's tags."""
    reconnects: int = 0
    latency: Latency = field(default_factory=Latency)
    reason: str | None = None
    """Why the link is down, in the driver's words; None while up, or when the driver
    does not say."""
    timestamps_replaced: int = 0
    """Device timestamps not believed (too far from the gateway's clock), since start."""


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    backlog_messages: int
    """Messages waiting in the store (the `state.backlog`): while the uplink is down,
    everything stored counts."""
    oldest_ms: int | None
    """Sample time of the oldest item waiting, or None when nothing waits."""
    bytes_on_disk: int
    max_bytes: int
    loss_entries: int = 0
    lost_items: int = 0
    """Readings and events the store could not keep, since installation (the loss ledger)."""
    write_error: str | None = None
    """Why the last commit failed (disk full, I/O error), or None when writes succeed."""


@dataclass(frozen=True, slots=True)
class UplinkSnapshot:
    connected: bool
    state_for_s: float
    """How long the uplink has been connected, or disconnected."""
    broker: str | None = None
    in_flight: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    connects: int = 0
    undelivered_for_s: float = 0.0
    """How long messages have waited with none delivered (0 while nothing waits or
    deliveries come): a connected uplink whose broker takes nothing shows it here."""
    refusal: str | None = None
    """What the broker last refused and why, until a delivery succeeds."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str
    uptime_s: float
    taken_ms: int
    """Wall-clock time of the snapshot, ms since the Unix epoch."""
    clock_synced: bool
    devices: tuple[DeviceSnapshot, ...]
    store: StoreSnapshot
    uplink: UplinkSnapshot
    tags_by_quality: dict[str, int] = field(default_factory=dict)
    """How many tags have each quality now; keys from QUALITY_NAMES."""
    alarms_active: dict[str, int] = field(default_factory=dict)
    """How many alarms are raised now, by kind (HH, H, L, LL, ROC, STUCK, FAULT, COMM)."""
    task_failures: dict[str, int] = field(default_factory=dict)
    """How often each supervised task failed (and was restarted) since the start."""
    stalled: str | None = None
    """Why the data does not flow (a hang: the watchdog's pings stop), or None."""
    gateway: str | None = None
    """The gateway code of the config in force: `edge-agent status` describes this agent
    only for a config of this gateway (ask.py)."""
    config_digest: str | None = None
    """SHA-256 of the config file in force, as loaded (config.loader.file_digest; None
    for an agent not started from a file): `edge-agent status` checks it likewise."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        up = sum(device.link == "up" for device in self.devices)
        parts = [
            f"{up}/{len(self.devices)} devices up",
            f"back-log {self.store.backlog_messages}",
            "uplink " + ("connected" if self.uplink.connected else "down"),
        ]
        if not self.clock_synced:
            parts.append("clock unsynced")
        if self.store.write_error is not None:
            parts.append("store cannot write")
        if self.stalled is not None:
            parts.append(f"stalled: {self.stalled}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    kind: str
    since_ms: int
    """When it was raised (its `raised` event's sample time), ms since the Unix epoch."""
    value: Value
    """The value it was raised at, as the wire carries it."""
    limit: Number | None = None


@dataclass(frozen=True, slots=True)
class TagSnapshot:
    """One tag as it is now, from its latest sample and its rules' state."""

    tag: str
    device: str
    hazard: str
    name: str | None
    unit: str | None
    value: Value
    """The latest value as the wire carries it; None while the tag is bad or not yet read."""
    text: str
    """The value for people, written as `edge-agent read` writes it (21.3, 'OPEN', -)."""
    quality: str | None
    """A key of QUALITY_NAMES; None until the tag's first sample."""
    reason: str | None
    """Why the quality is not good, in words; None while it is good."""
    sampled_ms: int | None
    alarms: tuple[ActiveAlarm, ...] = ()


def tags_json(taken_ms: int, tags: tuple[TagSnapshot, ...]) -> dict[str, Any]:
    """The /tags document: every tag, in the config's order of devices and tags."""
    return {"taken_ms": taken_ms, "tags": [asdict(tag) for tag in tags]}
