"""sluice.spool: the durable message store behind the Spool protocol, with group commit.

Public names: Spool, RcptUpdate, RcptProgress, SpooledMessage, FRESH, UnknownMessageError,
CorruptMessageError (from base), SqliteSpool (the durable store, SQLite), SegmentSpool
(the durable store as a segment log, less CPU per message), open_spool and SPOOL_KINDS
(choose one by name), MemorySpool and MemoryDisk (for tests). The conformance suite is
in :mod:`sluice.spool.conformance`.
Raises: sluice.errors.SpoolFullError and SpoolUnavailableError (and the two subclasses).
"""

from __future__ import annotations

from sluice.spool.base import (
    FRESH,
    CorruptMessageError,
    RcptProgress,
    RcptUpdate,
    Spool,
    SpooledMessage,
    UnknownMessageError,
)
from sluice.spool.memory import MemoryDisk, MemorySpool
from sluice.spool.opener import SPOOL_KINDS, AnySpool, open_spool, spool_kind_at
from sluice.spool.segment import SegmentSpool
from sluice.spool.sqlite import SqliteSpool

__all__ = [
    "FRESH",
    "SPOOL_KINDS",
    "AnySpool",
    "CorruptMessageError",
    "MemoryDisk",
    "MemorySpool",
    "RcptProgress",
    "RcptUpdate",
    "SegmentSpool",
    "Spool",
    "SpooledMessage",
    "SqliteSpool",
    "UnknownMessageError",
    "open_spool",
    "spool_kind_at",
]
