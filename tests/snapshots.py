"""Snapshots as the runtime would fill them, for the health, metrics, server and status tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge_agent.service.snapshot import (
    ActiveAlarm,
    DeviceSnapshot,
    PollLatency,
    Snapshot,
    StoreSnapshot,
    TagSnapshot,
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


def tags() -> tuple[TagSnapshot, ...]:
    """A level in its H alarm, a gas detector beyond its range, a device that does not answer,
    a string that looks like markup, and a tag not read yet."""
    level_h = ActiveAlarm("H", TAKEN_MS - 90_000, 17.4, 17.0)
    return (
        TagSnapshot("HZ01.LT101", "plc-tank-farm", "HZ01", "LT-101 tank level", "m", 17.6,
                    "17.6", "good", None, TAKEN_MS - 400, (level_h,)),
        TagSnapshot("HZ01.GT201", "plc-tank-farm", "HZ01", None, "%LEL", None, "-", "sensor",
                    "150 is beyond range 0..100 and its 10% tolerance: sent as a sensor fault, "
                    "no value (wrong byte order, type, scale or range?)", TAKEN_MS - 400,
                    (ActiveAlarm("FAULT", TAKEN_MS - 60_000, None),)),
        TagSnapshot("HZ02.PT201", "plc-boiler", "HZ02", None, "MPa", None, "-", "comm",
                    "device link down: connection: connect refused or unreachable",
                    TAKEN_MS - 400),
        TagSnapshot("HZ01.MSG", "plc-tank-farm", "HZ01", "panel message", None,
                    "<script>x</script>", "'<script>x</script>'", "good", None, TAKEN_MS - 400),
        TagSnapshot("HZ02.TT201", "plc-boiler", "HZ02", None, "°C", None, "-", None,
                    "not read yet", None),
    )  # fmt: skip
