"""The running agent's picture: its /status and /tags documents (service/http.py)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from edge_agent.config.service import Listen

FETCH_TIMEOUT_S: Final = 2.0
"""Longer than a loaded gateway takes to answer on loopback, shorter than a viewer waits."""


@dataclass(frozen=True, slots=True)
class Picture:
    status: dict[str, Any]
    """The /status document: {"snapshot": {...}, "health": {...}}."""
    tags: dict[str, Any]
    """The /tags document: {"taken_ms": ..., "tags": [...]}."""


def fetch(listen: Listen, timeout: float = FETCH_TIMEOUT_S) -> Picture | None:
    """Both documents, or None when the agent does not answer (refused, timed out, not ours)."""
    try:
        return Picture(_get(listen.url("/status"), timeout), _get(listen.url("/tags"), timeout))
    except (OSError, ValueError):
        return None


def _get(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        document: dict[str, Any] = json.load(response)
    return document
