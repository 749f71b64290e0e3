"""Reading an agent's JSON log lines in tests: which events, when, with what fields."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Protocol


class HasLog(Protocol):
    def log(self) -> str: ...


def events(agent: HasLog, event: str) -> list[dict[str, Any]]:
    """The agent's log records of one event, in order."""
    found = []
    for line in agent.log().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def wait_for_event(
    agent: HasLog, event: str, timeout: float = 15.0, count: int = 1
) -> dict[str, Any]:
    """Wait until `event` was logged `count` times; returns the last of them."""
    deadline = time.monotonic() + timeout
    while len(found := events(agent, event)) < count:
        assert time.monotonic() < deadline, f"no {event} within {timeout} s:\n{agent.log()}"
        time.sleep(0.1)
    return found[count - 1]


def at(record: dict[str, Any]) -> float:
    """A record's timestamp as seconds since the epoch, comparable with time.time()."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
