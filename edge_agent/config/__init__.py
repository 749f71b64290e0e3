"""The agent's configuration: the models, and the YAML loader that reports file:line:column.

The names are imported lazily, on first use. Drivers import
`edge_agent.config.tags` (which runs this file) while the schema imports the
drivers, so an eager import here would make `import edge_agent.drivers.modbus.config`
fail with a circular import when a driver module is imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.config.loader import load_config
    from edge_agent.config.schema import AgentConfig

__all__ = ["AgentConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "AgentConfig":
        from edge_agent.config.schema import AgentConfig  # noqa: PLC0415  # lazy: see above

        return AgentConfig
    if name == "load_config":
        from edge_agent.config.loader import load_config  # noqa: PLC0415  # lazy: see above

        return load_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
