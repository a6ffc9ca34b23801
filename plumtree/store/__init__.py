"""The durable node store: a node's epoch, streams, payloads, delivery log and members
in SQLite (WAL), written by group commits off the event loop. The core stays free of
I/O: it hands over and gets back the plain data of :mod:`plumtree.core.state`."""

from plumtree.core.state import DeliveryRecord
from plumtree.store.sqlite import (
    ROW_OVERHEAD,
    Batch,
    NodeStore,
    Retention,
    StoreError,
    stored_name,
)
from plumtree.store.writer import InlineWriter, StoreWriter

__all__ = [
    "ROW_OVERHEAD",
    "Batch",
    "DeliveryRecord",
    "InlineWriter",
    "NodeStore",
    "Retention",
    "StoreError",
    "StoreWriter",
    "stored_name",
]
