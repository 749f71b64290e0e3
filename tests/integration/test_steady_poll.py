"""At a steady poll the store works once per poll, not on timers: the committer waits for
something to be buffered and commits it commit_interval later, and the uplink packs
once after that commit, not again when the PUBACKs have emptied its window
(runtime._commit_periodically, Store.buffered, Uplink._on_ack). Each store job costs the
store's thread and the event loop a wake (docs/performance.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from conftest import Rig, counter_device, reporting_every_poll
from delivery import envelopes

from edge_agent import runtime
from edge_agent.clock import ClockWatch
from edge_agent.config.schema import AgentConfig
from edge_agent.model import Quality, Reading

POLL_S = 0.5
WINDOW_S = 4.0


async def test_the_store_is_asked_once_per_poll_to_commit_and_once_to_pack(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = reporting_every_poll(counter_device(sim.port, POLL_S, level=False))
    path = rig.agent_config([device], {"commit_interval": "100ms"})
    settings = yaml.safe_load(path.read_text()) | {"metrics": {"enabled": False}}
    clock = ClockWatch(synced=lambda: True)
    agent = runtime.Agent(AgentConfig.model_validate(settings), clock=clock)
    store = agent._store
    calls = {"flush": 0, "take": 0}

    def counting(name: str) -> None:
        method = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await method(*args, **kwargs)

        setattr(store, name, counted)

    counting("flush")
    counting("take")
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.to_thread(
            rig.platform.wait_for, lambda m: any(e.kind == "rt" for e in envelopes(m)), 20, "rt"
        )
        await asyncio.sleep(1.0)
        before = dict(calls)
        await asyncio.sleep(WINDOW_S)
        polls = WINDOW_S / POLL_S
        flushes, takes = (calls[name] - before[name] for name in ("flush", "take"))
        assert flushes <= polls + 2, f"{flushes} commits asked for in {polls:g} polls"
        assert takes <= polls + 2, f"{takes} packings in {polls:g} polls"
    finally:
        stop.set()
        await running


def test_a_late_poll_catches_up_only_while_the_uplink_keeps_up(rig: Rig) -> None:
    """Polls that outran what the uplink sends would grow a back-log and take the CPU that
    sends it (poller.py, runtime.CATCH_UP_BEHIND)."""
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    path = rig.agent_config([counter_device(sim.port, POLL_S, level=False)])
    settings = yaml.safe_load(path.read_text()) | {"metrics": {"enabled": False}}
    agent = runtime.Agent(AgentConfig.model_validate(settings))
    (poller,) = agent._pollers.values()
    may_catch_up = poller._may_catch_up
    assert may_catch_up(), "nothing waits"
    for n in range(runtime.CATCH_UP_BEHIND * 500 + 1):
        agent._store.add_reading(Reading("HZ01.T1", "HZ01", n, float(n), Quality.GOOD))
    assert may_catch_up(), "the uplink is down: only the disk takes the readings"
    agent.uplink.stats.mark(connected=True)
    assert not may_catch_up(), "connected, with more than it keeps up with waiting"
