"""Snapshots as the runtime would fill them, for the health, metrics, server and status tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge_agent.service.snapshot import (
    DeviceSnapshot,
    PollLatency,
    Snapshot,
    StoreSnapshot,
    UplinkSnapshot,
)

TAKEN_MS = 1_764_441_155_000


def latency(*seconds: float) -> PollLatency:
    histogram = PollLatency()
    for s in seconds:
        histogram.observe(s)
    return histogram


def healthy(**changes: Any) -> Snapshot:
    """Two devices up, the uplink connected for an hour, nothing waiting; `changes` replaced."""
    snapshot = Snapshot(
        version="1.4.0",
        uptime_s=7200.0,
        taken_ms=TAKEN_MS,
        clock_synced=True,
        devices=(
            DeviceSnapshot(
                "plc-tank-farm", "up", 3600.0, 7200, 2, 1, latency(0.004, 0.02, 0.3).snapshot()
            ),
            DeviceSnapshot("plc-boiler", "up", 3600.0, 7200, 0, 0, timestamps_replaced=4),
        ),
        store=StoreSnapshot(0, None, 5 * 1024**2, 2 * 1024**3),
        uplink=UplinkSnapshot(True, 3600.0, "platform.example:8883", 2, 120, 118, 0, 1),
        tags_by_quality={"good": 40, "uncertain": 1, "comm": 0, "sensor": 1, "config": 0},
        alarms_active={"H": 1, "HH": 1},
    )
    return dataclasses.replace(snapshot, **changes)


def device_down(snapshot: Snapshot, name: str, for_s: float) -> Snapshot:
    devices = tuple(
        dataclasses.replace(d, link="down", link_for_s=for_s) if d.name == name else d
        for d in snapshot.devices
    )
    return dataclasses.replace(snapshot, devices=devices)
