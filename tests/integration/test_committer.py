"""The committer ends when it is told to, even told as something is buffered: it waits
for that with asyncio.timeout, as Python 3.11's wait_for returns the result of an event
set in the same turn as the cancellation and swallows the stop (found by a SIGTERM test
of a busy gateway, where the first thing buffered wakes the committer at every poll)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from conftest import agent_config, counter_device

from edge_agent import runtime
from edge_agent.config.schema import AgentConfig


async def test_the_committer_ends_when_cancelled_as_something_is_buffered(
    tmp_path: Path,
) -> None:
    path = agent_config(tmp_path, 1, [counter_device(1, 1.0)])
    agent = runtime.Agent(AgentConfig.model_validate(yaml.safe_load(path.read_text())))
    committer = asyncio.create_task(agent._commit_periodically())
    await asyncio.sleep(0.05)  # waiting with nothing buffered
    agent._commit_wake.set()
    committer.cancel()
    done, _ = await asyncio.wait({committer}, timeout=1.0)
    assert done, "the cancellation was swallowed"
