"""The task supervisor in a running agent: a poller that raises is restarted, its device
honestly down meanwhile; a core task that keeps failing ends the agent with EX_SOFTWARE.

The agent runs in this process so that a test-only driver can stand in for a device
(a real simulator and a real Mosquitto do the rest).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Rig, agent_config, counter_device
from delivery import assert_no_seq_gap, envelopes
from structlog.testing import capture_logs

from edge_agent import cli, logs, runtime
from edge_agent.clock import ClockWatch
from edge_agent.config.schema import AgentConfig
from edge_agent.demo.broker import free_port
from edge_agent.drivers import build_driver
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.supervisor import TaskSupervisor

pytestmark = pytest.mark.fault

FAST = partial(TaskSupervisor, restart_first_s=0.2, restart_cap_s=0.5)


class FlakyDriver:
    """Reads well, but its link state raises from 1 s to 3 s after the first read: a bug
    outside the read, where the poller does not catch it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._first: float | None = None

    @property
    def link(self) -> LinkState:
        assert self._first is not None
        if 1.0 <= time.monotonic() - self._first < 3.0:
            raise RuntimeError("the driver's link state is broken")
        return LinkState.UP

    async def read(self) -> list[Sample]:
        if self._first is None:
            self._first = time.monotonic()
        return [Sample("HZ02.PT", time.time_ns() // 1_000_000, 0.42, Quality.GOOD)]

    async def close(self) -> None:
        pass


def config_of(path: Path, **changes: Any) -> AgentConfig:
    return AgentConfig.model_validate(yaml.safe_load(path.read_text()) | changes)


async def test_a_poller_that_raises_is_restarted_while_its_device_reads_as_down(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    flaky = {**counter_device(sim.port, 0.2, level=False), "name": "plc-flaky",
             "comm_alarm_after": "1s",
             "tags": [{"tag": "HZ02.PT", "hazard": "HZ02", "address": "hr:0"}]}  # fmt: skip
    steady = {**counter_device(sim.port, 0.2, level=False), "unit": 1}
    steady["tags"][0]["report"] = {"every": "200ms"}
    flaky["unit"] = 2
    config = config_of(rig.agent_config([steady, flaky]), metrics={"enabled": False})
    monkeypatch.setattr(runtime, "TaskSupervisor", FAST)
    monkeypatch.setattr(
        runtime,
        "build_driver",
        lambda device, report_every: (
            FlakyDriver(device.name)
            if device.name == "plc-flaky"
            else build_driver(device, report_every=report_every)
        ),
    )
    agent = runtime.Agent(config, clock=ClockWatch(synced=lambda: True))
    stop = asyncio.Event()
    with capture_logs() as logged:
        running = asyncio.create_task(agent.run(stop))

        def recovered(messages: list[Any]) -> bool:
            readings = [i for m in envelopes(messages) if m.kind == "rt" for i in m.body["items"]]
            qualities = [r["q"] for r in readings if r["tag"] == "HZ02.PT"]
            return 2 in qualities and qualities[-1] == 0 and qualities.index(2) > 0

        await asyncio.to_thread(rig.platform.wait_for, recovered, 20, "q=2 then good again")
        await asyncio.sleep(1.0)  # a state after the restart
        stop.set()
        await running

    failed = [line for line in logged if line["event"] == "task_failed"]
    assert {line["task"] for line in failed} == {"poll:plc-flaky"}
    assert agent.fatal is None
    messages = rig.platform.messages
    alarms = [i for m in envelopes(messages) if m.kind == "alarm" for i in m.body["items"]]
    comm = [(a["tag"], a["state"]) for a in alarms if a["kind"] == "COMM"]
    assert comm == [("HZ02.PT", "raised"), ("HZ02.PT", "cleared")]
    steady_ts = sorted(
        {i["ts"] for m in envelopes(messages) if m.kind == "rt" for i in m.body["items"]
         if i["tag"] == "HZ01.CNT"}
    )  # fmt: skip
    gaps = [b - a for a, b in itertools.pairwise(steady_ts)]
    assert max(gaps) < 1000, "the steady device kept its rate throughout"
    assert_no_seq_gap(messages)
    states = [m.body for m in messages if m.kind == "state" and m.body.get("online")]
    reasons = {entry["reason"] for state in states for entry in state.get("losses", [])}
    assert "not sampling: the poller of plc-flaky restarted after a failure" in reasons


def test_a_core_task_that_keeps_failing_ends_the_agent_with_ex_software(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = agent_config(tmp_path, free_port(), [counter_device(free_port(), 0.2)])

    async def broken_commits(self: runtime.Agent) -> None:
        await asyncio.sleep(0.05)
        raise OSError("disk I/O error")

    monkeypatch.setattr(runtime, "TaskSupervisor", FAST)
    monkeypatch.setattr(runtime.Agent, "_commit_periodically", broken_commits)
    # Logging as configured for the test (captured), not onto this test's stderr: loggers
    # cached on that stream would write into it after it closed.
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    started = time.monotonic()
    with capture_logs() as logged:
        assert cli.main(["run", str(config)]) == cli.EX_SOFTWARE
    assert time.monotonic() - started < 20
    (gave_up,) = [line for line in logged if line["event"] == "task_gave_up"]
    assert "core task committer failed 5 times" in gave_up["reason"]
    assert logged[-1]["event"] == "agent_stopped"
