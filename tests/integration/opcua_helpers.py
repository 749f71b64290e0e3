"""Small helpers of the OPC UA tests: a tag, a device config, samples by tag.

Reading until something shows is `polling.read_until` (tests/polling.py).
"""

from __future__ import annotations

from typing import Any

from opcua_sim import NAMESPACE

from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.model import Sample


def tag(code: str, where: str, **fields: Any) -> dict[str, Any]:
    """A tag at NodeId `where` (s=... in the plant namespace), or a browse path when it has a /."""
    key = "browse_path" if "/" in where else "node"
    return {"tag": code, "hazard": "MINE1", key: where, **fields}


def device(endpoint: str, tags: list[dict[str, Any]], **fields: Any) -> OpcuaDevice:
    return OpcuaDevice.model_validate(
        {
            "name": "ua-test",
            "driver": "opcua",
            "endpoint": endpoint,
            "namespace": NAMESPACE,
            "timeout": "1s",
            "connect_timeout": "3s",
            "reconnect_min": "200ms",
            "reconnect_max": "500ms",
            "poll": "200ms",
            "tags": tags,
            **fields,
        }
    )


def by_tag(samples: list[Sample]) -> dict[str, Sample]:
    """The last sample of each tag."""
    return {s.tag: s for s in samples}
