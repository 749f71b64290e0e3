"""The one-line summary systemd shows (`systemctl status`), from a snapshot."""

from __future__ import annotations

import dataclasses

from snapshots import device_down, healthy


def test_a_healthy_agent_in_one_line() -> None:
    assert healthy().summary_line() == "2/2 devices up; back-log 0; uplink connected"


def test_trouble_is_named_in_the_line() -> None:
    snapshot = device_down(healthy(), "plc-boiler", 30)
    snapshot = dataclasses.replace(
        snapshot,
        clock_synced=False,
        store=dataclasses.replace(snapshot.store, backlog_messages=37, write_error="disk full"),
        uplink=dataclasses.replace(snapshot.uplink, connected=False),
    )
    assert snapshot.summary_line() == (
        "1/2 devices up; back-log 37; uplink down; clock unsynced; store cannot write"
    )
