"""Broker down and back: back-fill with hist: true, no seq gap, no reading lost.

Knob (environment): EDGE_AGENT_TEST_OUTAGE_S (default 60) seconds of outage.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import Rig, agent_config, counter_device
from delivery import (
    assert_copies_identical,
    assert_counter_complete,
    assert_no_seq_gap,
    drained_since,
    envelopes,
)

OUTAGE_S = float(os.environ.get("EDGE_AGENT_TEST_OUTAGE_S", "60"))
BACKFILL_RATE = f"{int(OUTAGE_S * 70)}B"
"""About 10 s of draining for the outage's ~10 readings/s of ~70 bytes each, in messages of
20 items: back-fill is still going out when the next live alarm (every 6 s) falls due."""

pytestmark = pytest.mark.fault


def test_broker_outage_is_back_filled_with_hist(rig: Rig) -> None:
    sim = rig.plant(
        [
            {"address": "hr:0", "type": "uint32", "value": {"counter": {}}},
            # Crosses the level's H = 15 every 6 s: alarms keep falling due.
            {
                "address": "hr:2",
                "type": "float32",
                "value": {"sine": {"mean": 12, "amplitude": 5, "period": "6s"}},
            },
        ]
    )
    config = agent_config(
        rig.tmp_path,
        rig.broker.port,
        [counter_device(sim.port, 0.2)],
        backfill_rate=BACKFILL_RATE,
        batch={"max_items": 20},
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "first readings")
    time.sleep(1)
    down_at = time.time()
    rig.broker.stop()
    time.sleep(OUTAGE_S)
    rig.broker.start()
    up_at = time.time()
    rig.platform.wait_for(drained_since(up_at), 90, "state with backlog 0 after the outage")
    messages = rig.platform.messages

    assert_no_seq_gap(messages)
    assert_copies_identical(messages)
    assert_counter_complete(messages, "HZ01.CNT", downtimes=[], slack_s=0)
    during = [
        (m.body["seq"], m.body["hist"])
        for m in envelopes(messages)
        if m.kind == "rt"
        for item in m.body["items"]
        if down_at + 1 <= item["ts"] / 1000 <= up_at
    ]
    assert during, "no reading sampled during the outage arrived"
    assert all(hist for _, hist in during), "readings sampled while down must carry hist: true"
    hist_seqs = [m.body["seq"] for m in envelopes(messages) if m.kind == "rt" and m.body["hist"]]
    assert hist_seqs == sorted(hist_seqs), "back-fill goes out oldest first"
    live_alarms = [
        m.body["seq"] for m in envelopes(messages) if m.kind == "alarm" and not m.body["hist"]
    ]
    assert any(seq < max(hist_seqs) for seq in live_alarms), (
        "a live alarm raised while back-fill drained must go ahead of the rest of the back-fill"
    )
    rig.platform.wait_for(
        lambda ms: any(
            m.kind == "rt" and not m.body["hist"] and m.body["items"][0]["ts"] / 1000 > up_at + 1
            for m in ms
        ),
        timeout=15,
        what="live readings after the outage",
    )
    assert agent.terminate() == 0, agent.log()
