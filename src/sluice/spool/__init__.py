"""sluice.spool: the durable message store behind the Spool protocol, with group commit.

Public names: Spool, RcptUpdate, RcptProgress, SpooledMessage, FRESH, UnknownMessageError,
CorruptMessageError (from base), SqliteSpool (the durable store), MemorySpool and
MemoryDisk (for tests). The conformance suite is in :mod:`sluice.spool.conformance`.
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
from sluice.spool.sqlite import SqliteSpool

__all__ = [
    "FRESH",
    "CorruptMessageError",
    "MemoryDisk",
    "MemorySpool",
    "RcptProgress",
    "RcptUpdate",
    "Spool",
    "SpooledMessage",
    "SqliteSpool",
    "UnknownMessageError",
]
