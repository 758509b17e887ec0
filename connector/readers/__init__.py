"""Readers: where change events come from (connector/readers/base.py has the contract).

``trigger`` claims the outbox the capture triggers fill (polling the consumer's session:
polling.py); ``wal`` is pushed a logical replication slot's changes (wal.py, over
replication.py). Both keep the lease and liveness on the consumer's session (session.py).
"""

from __future__ import annotations

from connector.readers.base import Batch, Reader, ReaderDisconnected
from connector.readers.polling import SessionReader
from connector.readers.session import ConsumerSession
from connector.readers.trigger import CONSUMER_SETTINGS, TriggerReader
from connector.readers.wal import WAL_SETTINGS, WalReader
from connector.store.postgres import PostgresStore
from connector.vocabulary import CaptureConfig, PostgresConfig

__all__ = ["Batch", "ConsumerSession", "Reader", "ReaderDisconnected", "open_reader"]


def open_reader(pg: PostgresConfig, capture: CaptureConfig,
                store: PostgresStore | None = None) -> SessionReader:
    """The reader ``capture.source`` names, on a consumer session of its own (not connected
    yet: ``await reader.session.open()`` then ``await reader.open()``)."""
    store = store or PostgresStore(pg, capture)
    if capture.source == "wal":
        return WalReader(ConsumerSession(pg, capture, WAL_SETTINGS), store, capture)
    return TriggerReader(ConsumerSession(pg, capture, CONSUMER_SETTINGS), store, capture)
