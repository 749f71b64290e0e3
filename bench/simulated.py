"""The simulated plant for the benchmarks: `edge-agent simulate` in its own process.

In its own process so that the agent's CPU time, measured in the bench's
process, holds none of the simulator's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

_PORT = re.compile(r":(\d+) ")


def spawn_simulator(
    scenario: dict[str, Any], directory: Path
) -> tuple[subprocess.Popen[str], list[int]]:
    """Serve `scenario`; returns the process and each device's port, in scenario order."""
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "simulate", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ports = []
    for _ in scenario["devices"]:
        line = process.stdout.readline()  # "simulating NAME on HOST:PORT unit 1" or "... namespace"
        match = _PORT.search(line)
        if match is None:
            process.kill()
            raise RuntimeError(f"simulator said {line!r}")
        ports.append(int(match.group(1)))
    return process, ports
