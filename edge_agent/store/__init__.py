"""The durable store-and-forward buffer between the rules and the uplink."""

from edge_agent.store.ledger import Loss, Totals
from edge_agent.store.sqlite import Backlog, BatchLimits, Store, StoredMessage, StoreSettings

__all__ = ["Backlog", "BatchLimits", "Loss", "Store", "StoreSettings", "StoredMessage", "Totals"]
