"""A full disk: the agent keeps polling and judging alarms, keeps what it can, says so,
and resumes when space returns. Needs root to mount a 4 MiB tmpfs; skipped otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Plant, Process, agent_config, busy_device
from delivery import assert_holes_declared, assert_no_seq_gap, drained_since, envelopes

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber

pytestmark = pytest.mark.fault


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def wait_for_log(process: Process, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{process.log()[-3000:]}"
        time.sleep(0.2)


def test_a_full_disk_degrades_and_recovers(  # noqa: PLR0917  (pytest fixtures)
    tmp_path: Path,
    small_disk: Path,
    broker: Mosquitto,
    platform: PlatformSubscriber,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    # The gas detector crosses H = 25 every 4 s, so alarms fall due whatever the disk does.
    gas = {"sine": {"mean": 25, "amplitude": 20, "period": "4s"}}
    device = busy_device(plant, gas=gas, limits={"H": 25})
    config = agent_config(
        tmp_path, broker.port, [device], store={"path": str(small_disk / "store.db")}
    )
    (small_disk / "other-data").write_bytes(b"\0" * 2 * 1024 * 1024)  # not all 4 MiB are ours
    broker.stop()
    agent = spawn("agent", "run", str(config))
    # A disk smaller than store.max_size is treated like the cap: thin, never fill it.
    wait_for_log(agent, "store_thinned", 60)
    assert "store_write_failed" not in agent.log()

    # Something else fills the disk. The store thins within the pages it already has (its
    # WAL is reused in place), and what it cannot write it holds in memory, within a
    # bound: either way polling and alarms go on, and nothing is lost undeclared.
    filled = len(agent.log())
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 4096)
    deadline = time.monotonic() + 20
    while agent.log()[filled:].count("alarm_raised") < 3:  # alarms are judged on a full disk
        assert time.monotonic() < deadline, "no alarm judged while the disk was full"
        time.sleep(0.2)
    assert agent.popen is not None
    assert agent.popen.poll() is None, "the agent keeps running"

    filler.unlink()
    if "store_write_failed" in agent.log()[filled:]:
        failed = next(line for line in agent.log().splitlines() if "store_write_failed" in line)
        assert "full" in json.loads(failed)["reason"]
        wait_for_log(agent, "store_write_recovered", 15)
    back = time.time()
    broker.start()
    platform.wait_for(drained_since(back), 60, "drained after space returned")
    assert agent.terminate() == 0, agent.log()[-3000:]

    messages = platform.messages
    assert_no_seq_gap(messages)
    # Polls go on and whatever was not kept is declared: no hole without a ledger entry.
    assert_holes_declared(messages, "HZ01.T000", max_gap_s=0.35)
    alarms = [i for m in envelopes(messages) if m.kind == "alarm" for i in m.body["items"]]
    assert any(a["tag"] == "HZ01.GT201" and a["state"] == "raised" for a in alarms)
