"""The durable store-and-forward buffer between the rules and the uplink."""

from edge_agent.store.ledger import Loss, Totals
from edge_agent.store.sqlite import (
    Backlog,
    BatchLimits,
    PackOptions,
    Store,
    StoredMessage,
    StoreSettings,
)

__all__ = [
    "Backlog",
    "BatchLimits",
    "Loss",
    "PackOptions",
    "Store",
    "StoreSettings",
    "StoredMessage",
    "Totals",
]
