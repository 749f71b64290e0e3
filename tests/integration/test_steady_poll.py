"""At a steady poll the store works once per poll, not on timers: the committer waits for
something to be buffered and commits it commit_interval later, and the uplink packs
once after that commit, not again when the PUBACKs have emptied its window
(runtime._commit_periodically, Store.buffered, Uplink._on_ack). Each store job costs the
store's thread and the event loop a wake (docs/performance.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import yaml
from conftest import Rig, counter_device, reporting_every_poll
from delivery import envelopes

from edge_agent import runtime
from edge_agent.clock import ClockWatch
from edge_agent.config.schema import AgentConfig
from edge_agent.model import Quality, Reading
from edge_agent.poller import Poller

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
    sends it (poller.py, runtime.CATCH_UP_LAG_S). How many readings wait says nothing by
    itself: at high rates a commit interval's normal batch is thousands."""
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    path = rig.agent_config([counter_device(sim.port, POLL_S, level=False)])
    config = AgentConfig.model_validate(
        yaml.safe_load(path.read_text()) | {"metrics": {"enabled": False}}
    )
    lag_ms = round(1000 * (config.store.commit_interval + config.uplink.batch.linger
                           + runtime.CATCH_UP_LAG_S + 1))  # fmt: skip

    def agent_waiting(readings: int, sampled_ago_ms: int) -> tuple[runtime.Agent, Poller]:
        agent = runtime.Agent(config)
        ts = time.time_ns() // 1_000_000 - sampled_ago_ms
        for n in range(readings):
            agent._store.add_reading(Reading("HZ01.T1", "HZ01", ts, float(n), Quality.GOOD))
        agent.uplink.stats.mark(connected=True)
        (poller,) = agent._pollers.values()
        return agent, poller

    _, poller = agent_waiting(0, 0)
    assert poller._may_catch_up(), "nothing waits"
    _, poller = agent_waiting(10_000, 0)
    assert poller._may_catch_up(), "many readings waiting, none for long"
    agent, poller = agent_waiting(1, lag_ms)
    assert not poller._may_catch_up(), "one reading waiting too long"
    agent.uplink.stats.mark(connected=False)
    assert poller._may_catch_up(), "the uplink is down: only the disk takes the readings"
