"""The durable store-and-forward buffer between the rules and the uplink.

`Store` (store.py) is what the event loop uses; the SQLite work runs on the
store's own thread (actor.py, engine.py), split by job: the write buffer
(buffer.py), the outbox (outbox.py, with its copy of the live readings in
tail.py), housekeeping (maintenance.py, capacity.py), the ledger (ledger.py),
opening (database.py).
"""

from edge_agent.store.engine import Figures, StoreSettings
from edge_agent.store.ledger import Loss, Totals
from edge_agent.store.outbox import Admission, Kind, StoredMessage
from edge_agent.store.store import Backlog, Store

__all__ = [
    "Admission",
    "Backlog",
    "Figures",
    "Kind",
    "Loss",
    "Store",
    "StoreSettings",
    "StoredMessage",
    "Totals",
]
