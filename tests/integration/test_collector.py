"""The cyclic garbage collector in a running agent: what start-up built is frozen out of
its sight while the agent runs (edge_agent/runtime.py, docs/performance.md), and handed
back when it stops."""

from __future__ import annotations

import asyncio
import gc

import yaml
from conftest import Rig, counter_device
from delivery import envelopes

from edge_agent import runtime
from edge_agent.clock import ClockWatch
from edge_agent.config.schema import AgentConfig


async def test_start_up_is_frozen_while_the_agent_runs_and_thawed_after(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    path = rig.agent_config([counter_device(sim.port, 0.2)])
    settings = yaml.safe_load(path.read_text()) | {"metrics": {"enabled": False}}
    clock = ClockWatch(synced=lambda: True)
    agent = runtime.Agent(AgentConfig.model_validate(settings), clock=clock)
    stop = asyncio.Event()
    assert gc.get_freeze_count() == 0
    running = asyncio.create_task(agent.run(stop))
    await asyncio.to_thread(
        rig.platform.wait_for, lambda m: any(e.kind == "rt" for e in envelopes(m)), 20, "rt"
    )
    frozen = gc.get_freeze_count()
    stop.set()
    await running
    assert frozen > 10_000, "the config, rules, drivers and modules are frozen"
    assert gc.get_freeze_count() == 0
