"""The durable store-and-forward buffer between the rules and the uplink."""

from edge_agent.store.sqlite import Backlog, BatchLimits, Store, StoredMessage

__all__ = ["Backlog", "BatchLimits", "Store", "StoredMessage"]
