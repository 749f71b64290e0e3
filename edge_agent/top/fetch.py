"""The running agent's picture: its /status and /tags documents (service/http.py), taken
only from this config's agent (ask.py: its local socket first, then its port; the
gateway code and the file's SHA-256 checked), never from whatever answers on the port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.ask import Running, Silent, Stranger, ask
from edge_agent.config.schema import AgentConfig

__all__ = ["Picture", "look"]


@dataclass(frozen=True, slots=True)
class Picture:
    status: dict[str, Any]
    """The /status document: {"snapshot": {...}, "health": {...}}."""
    tags: dict[str, Any]
    """The /tags document: {"taken_ms": ..., "tags": [...]}."""
    where: str
    """Where the agent answered: its socket's path, or host:port."""


def look(config: AgentConfig, path: Path) -> Picture | Stranger | Silent:
    """The picture of the agent running `config` (loaded from `path`); else who answered
    instead, or where nothing did."""
    answer = ask(config, path)
    if not isinstance(answer, Running):
        return answer
    if answer.tags is None:
        return Silent((f"{answer.where}: /status answered, /tags did not",))
    return Picture(answer.document, answer.tags, answer.where)
