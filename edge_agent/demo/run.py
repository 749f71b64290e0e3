"""`edge-agent demo`: a Mosquitto, the simulated tank farm and the agent on loopback.

Everything runs as it would on site: the simulator and the agent are separate
processes talking Modbus TCP and MQTT; this process plays the platform and
prints what it receives, and a summary at the end. Ctrl-C or `--duration`
stops all three, leaving no process behind; their logs stay.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from edge_agent.demo.broker import INSTALL_HINT, Mosquitto, find_mosquitto, free_port, wait_for_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.demo.view import View

DEMO_CONFIG = Path(str(files("edge_agent.demo") / "demo.yaml"))
"""The demo's site: config/demo.yaml in a source tree (a link to it), packaged in the wheel."""
DEMO_SCENARIO = Path(str(files("edge_agent.drivers.simulator") / "scenarios" / "demo.yaml"))


def local_config(
    source: Path, workdir: Path, broker_port: int, device_ports: dict[str, int]
) -> Path:
    """A copy of `source` pointed at loopback ports and a store under `workdir`."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    data["uplink"]["mqtt"].update(host="127.0.0.1", port=broker_port)
    data["store"]["path"] = str(workdir / "store.db")
    for device in data["devices"]:
        device.update(host="127.0.0.1", port=device_ports[device["name"]])
    target = workdir / "agent.yaml"
    target.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return target


def run_demo(duration: float | None, outage_at: float = 35.0, outage_s: float = 8.0) -> int:
    """Run until Ctrl-C or `duration`; stop the broker `outage_at` s in for `outage_s` s.

    An `outage_at` of 0 means no outage. The working directory, with every
    process's log and the agent's store, is kept for reading afterwards.
    """
    if find_mosquitto() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker = Mosquitto(workdir / "broker")
    view = View(DEMO_CONFIG)
    processes: list[subprocess.Popen[bytes]] = []
    platform: PlatformSubscriber | None = None
    try:
        broker.start()
        platform = PlatformSubscriber(broker.port, client_id="demo-platform")
        platform.on_message(view.show)
        platform.start()
        plc_port = free_port()
        processes.append(
            _spawn(
                workdir,
                "simulator",
                "simulate",
                str(DEMO_SCENARIO),
                "--port",
                f"plc-tank-farm={plc_port}",
            )
        )
        wait_for_port(plc_port)
        config = local_config(DEMO_CONFIG, workdir, broker.port, {"plc-tank-farm": plc_port})
        processes.append(_spawn(workdir, "agent", "run", str(config)))
        view.banner(broker.port, plc_port, workdir)
        _play(stop, broker, view, duration=duration, outage_at=outage_at, outage_s=outage_s)
    finally:
        for process in reversed(processes):
            _terminate(process)
        if platform is not None:
            platform.stop()
        broker.stop()
    view.summary()
    view.note(f"logs and the agent's store are kept in {workdir}")
    return 0


def _play(
    stop: threading.Event,
    broker: Mosquitto,
    view: View,
    *,
    duration: float | None,
    outage_at: float,
    outage_s: float,
) -> None:
    """Wait out the demo, with one broker outage to show store-and-forward at work."""
    started = time.monotonic()
    end = None if duration is None else started + duration

    def sleep_until(elapsed: float) -> bool:
        """Sleep until `elapsed` s into the demo; False when the demo ends first."""
        target = started + elapsed
        if end is not None and target >= end:
            stop.wait(max(end - time.monotonic(), 0))
            return False
        return not stop.wait(max(target - time.monotonic(), 0))

    if outage_at > 0 and sleep_until(outage_at):
        view.note(f"broker stopped for {outage_s:.0f} s: the agent keeps polling into its store")
        broker.stop()
        back_in_time = sleep_until(outage_at + outage_s)
        broker.start()
        if not back_in_time:
            return
        view.note("broker back: what waited is sent oldest first with hist: true")
    stop.wait(None if end is None else max(end - time.monotonic(), 0))


def _spawn(workdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
    )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
