"""/healthz rules: failing, degraded or ok, with reasons, from a snapshot."""

from __future__ import annotations

import dataclasses

from snapshots import TAKEN_MS, device_down, healthy

from edge_agent.service.health import Health, HealthLimits, judge

LIMITS = HealthLimits(devices_down_s=300, uplink_down_s=600)


def test_a_healthy_agent_is_ok() -> None:
    assert judge(healthy(), LIMITS) == Health("ok", [])


def test_one_device_down_is_degraded() -> None:
    health = judge(device_down(healthy(), "plc-boiler", 30), LIMITS)
    assert health == Health("degraded", ["device plc-boiler down for 30 s"])
    assert health.http_status == 200


def test_every_device_down_is_degraded_until_the_limit_then_failing() -> None:
    snapshot = device_down(healthy(), "plc-boiler", 400)
    assert judge(device_down(snapshot, "plc-tank-farm", 200), LIMITS).state == "degraded"
    health = judge(device_down(snapshot, "plc-tank-farm", 301), LIMITS)
    assert health.state == "failing"
    assert health.reasons[0] == "no device up for 5 min"
    assert health.http_status == 503


def test_an_uplink_down_past_its_limit_is_failing() -> None:
    snapshot = healthy(uplink=dataclasses.replace(healthy().uplink, connected=False))
    short = dataclasses.replace(snapshot.uplink, state_for_s=60)
    long = dataclasses.replace(snapshot.uplink, state_for_s=900)
    assert judge(dataclasses.replace(snapshot, uplink=short), LIMITS) == Health(
        "degraded", ["uplink down for 60 s"]
    )
    assert judge(dataclasses.replace(snapshot, uplink=long), LIMITS) == Health(
        "failing", ["uplink down for 15 min"]
    )


def test_a_store_that_cannot_write_is_failing() -> None:
    store = dataclasses.replace(healthy().store, write_error="disk full")
    assert judge(healthy(store=store), LIMITS) == Health(
        "failing", ["the store cannot write: disk full"]
    )


def test_a_backlog_is_degraded_with_its_age() -> None:
    store = dataclasses.replace(healthy().store, backlog_messages=12, oldest_ms=TAKEN_MS - 240_000)
    assert judge(healthy(store=store), LIMITS) == Health(
        "degraded", ["12 messages wait in the store, oldest sampled 4 min ago"]
    )


def test_an_unsynchronised_clock_is_degraded() -> None:
    assert judge(healthy(clock_synced=False), LIMITS) == Health(
        "degraded", ["the system clock is not synchronised"]
    )


def test_a_down_device_carries_its_drivers_reason() -> None:
    """A driver that says why its link is down (OPC UA) has it after the duration."""
    snapshot = device_down(healthy(), "plc-boiler", 30)
    devices = tuple(
        dataclasses.replace(d, reason="the server refuses the user of /x (BadUserAccessDenied)")
        if d.name == "plc-boiler"
        else d
        for d in snapshot.devices
    )
    health = judge(dataclasses.replace(snapshot, devices=devices), LIMITS)
    assert health.reasons == [
        "device plc-boiler down for 30 s: the server refuses the user of /x (BadUserAccessDenied)"
    ]


def test_a_broker_that_refuses_everything_is_named_as_the_cause() -> None:
    refusing = dataclasses.replace(
        healthy().uplink, undelivered_for_s=700, refusal="Not authorized (rt)"
    )
    health = judge(healthy(uplink=refusing), LIMITS)
    assert health == Health(
        "failing", ["nothing delivered for 12 min; the broker refuses: Not authorized (rt)"]
    )
