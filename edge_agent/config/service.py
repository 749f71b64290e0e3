"""Config of the agent as a service: where metrics and health are served, when health fails."""

from __future__ import annotations

import re
from typing import NamedTuple

from pydantic import Field, field_validator

from edge_agent.config.tags import Strict
from edge_agent.config.types import Duration

_LISTEN = re.compile(r"^(.+):([0-9]{1,5})$")


class Listen(NamedTuple):
    host: str
    port: int

    def url(self, path: str) -> str:
        """`path` on this address, as a client on this machine reaches it: an agent
        listening on every address (0.0.0.0, ::) answers on loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"


class HealthThresholds(Strict):
    """When /healthz turns from degraded to failing (HTTP 503)."""

    devices_down: Duration = Field(
        300.0, description="Failing when no device has been up for this long."
    )
    uplink_down: Duration = Field(
        600.0, description="Failing when the uplink has been disconnected for this long."
    )


class Metrics(Strict):
    """The agent's own HTTP endpoints: /metrics (Prometheus), /healthz and /status."""

    enabled: bool = Field(
        True,
        description=(
            "Serve /metrics, /healthz and /status on `listen`. `edge-agent status` asks the "
            "agent's local socket first, which is served either way."
        ),
    )
    listen: str = Field(
        "127.0.0.1:9108",
        # In the schema only: validation keeps _host_and_port's message, which names the form.
        json_schema_extra={"pattern": _LISTEN.pattern},
        description=(
            "host:port to listen on ([::1]:9108 for IPv6). Keep it on loopback unless a "
            "firewall guards the port: the endpoints have no authentication."
        ),
    )
    health: HealthThresholds = Field(
        default_factory=HealthThresholds,  # type: ignore[arg-type]  # every field has a default
        description="When /healthz reports failing.",
    )

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    def address(self) -> Listen:
        return parse_listen(self.listen)


def parse_listen(value: str) -> Listen:
    """'127.0.0.1:9108' or '[::1]:9108'; raises ValueError saying what is wrong."""
    match = _LISTEN.match(value)
    if match is None or not 0 < int(match[2]) < 65536:
        raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:9108")
    return Listen(match[1].removeprefix("[").removesuffix("]"), int(match[2]))
