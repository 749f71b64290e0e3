"""The uplink to the platform's MQTT broker (spec uplink-v1)."""

from edge_agent.uplink.envelope import Identity
from edge_agent.uplink.mqtt import Uplink, UplinkStats

__all__ = ["Identity", "Uplink", "UplinkStats"]
