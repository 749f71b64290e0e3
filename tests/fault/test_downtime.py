"""Every stretch in which the agent did not sample is declared, and no wider than it was.

A kill -9 with the broker down, then the WAL cut inside its valid frames (what a
power loss can leave: the last commits rolled back), then a restart: the
platform must see either every reading of a counter or a declared stretch over
each hole, and each declared stretch may pass the hole by at most one commit
interval on either side (declaring everything would also "cover" every hole).

Knob: EDGE_AGENT_TEST_DOWNTIME_S (default 6) seconds of readings stored while
the broker is down before the kill.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Rig, counter_device, reporting_every_poll
from delivery import counter_readings, drained_since

from edge_agent.demo.platform import Received

pytestmark = pytest.mark.fault

DOWN_S = float(os.environ.get("EDGE_AGENT_TEST_DOWNTIME_S", "6"))
POLL_S = 0.2
COMMIT_S = 0.25
SLACK_S = 0.15
"""Scheduling jitter: a sample's time and the moment its poll is handed on."""


def cut_wal(store: Path, keep: float) -> tuple[int, int]:
    """Truncate the store's WAL at a frame boundary, keeping the first `keep` of its frames;
    the wal-index is rebuilt on the next open, as after a power loss."""
    wal = store.with_name(store.name + "-wal")
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    frame = 24 + page_size
    frames = (len(data) - 32) // frame
    kept = int(frames * keep)
    wal.write_bytes(data[: 32 + kept * frame])
    store.with_name(store.name + "-shm").unlink(missing_ok=True)
    return frames, kept


def stretches(messages: list[Received]) -> list[tuple[float, float]]:
    """The declared stretches without sampling (first, last in s) of the newest state."""
    state = [m.body for m in messages if m.kind == "state" and m.body.get("online")][-1]
    return [
        (entry["first"] / 1000, entry["last"] / 1000)
        for entry in state.get("losses", [])
        if entry["reason"].startswith("not sampling") and "last" in entry
    ]


def test_a_kill9_then_a_cut_wal_leaves_no_hole_undeclared_and_declares_no_more(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = reporting_every_poll(counter_device(sim.port, POLL_S, level=False))
    agent = rig.start_agent([device])
    rig.platform.wait_for(lambda ms: len(counter_readings(ms, "HZ01.CNT")) >= 5, 15, "readings")
    rig.broker.stop()
    time.sleep(DOWN_S)
    agent.kill9()
    frames, kept = cut_wal(rig.tmp_path / "store.db", keep=0.5)
    assert kept < frames, "the WAL held commits to roll back"
    restarted = time.time()
    agent.start()
    time.sleep(2.0)
    rig.broker.start()
    rig.platform.wait_for(drained_since(restarted + 2), 60, "drained after the restart")
    assert agent.terminate() == 0, agent.log()

    messages = rig.platform.messages
    declared = stretches(messages)
    assert declared, "the stop is declared"
    holes = _holes(counter_readings(messages, "HZ01.CNT"))
    assert holes, "the cut WAL rolled readings back"
    for before, after in holes:
        covering = [
            (first, last)
            for first, last in declared
            if first <= before + POLL_S + SLACK_S and last >= after - POLL_S - SLACK_S
        ]
        assert covering, f"hole {before:.3f}..{after:.3f} is not declared: {declared}"
    for first, last in declared:
        hole = [
            (before, after)
            for before, after in holes
            if first >= before - COMMIT_S - SLACK_S and last <= after + COMMIT_S + SLACK_S
        ]
        assert hole, f"declared {first:.3f}..{last:.3f} is wider than any hole: {holes}"


def _holes(readings: list[tuple[Any, float]]) -> list[tuple[float, float]]:
    """(last sample before, first sample after) of every gap of more than two polls."""
    times = sorted(ts for _, ts in readings)
    return [(a, b) for a, b in itertools.pairwise(times) if b - a > 2 * POLL_S]
