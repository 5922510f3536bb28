"""MemorySpool: an in-memory Spool for tests of the parts above the spool.

It keeps its "durable" state in a :class:`MemoryDisk`, which outlives the spool object, so a
test can ``abandon`` one spool (a crash) and open another on the same disk (a restart). It
follows every rule of :mod:`sluice.spool.base` and passes the same conformance suite as the
SQLite spool. ``full`` on the disk makes stores fail with SpoolFullError until cleared.

Public names: MemorySpool, MemoryDisk.
Raises: SpoolFullError, SpoolUnavailableError (closed), UnknownMessageError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.message import Envelope, MessageId
from sluice.spool.base import FRESH, RcptProgress, RcptUpdate, SpooledMessage, UnknownMessageError

__all__ = ["MemoryDisk", "MemorySpool"]


@dataclass(slots=True)
class _Entry:
    envelope: Envelope
    body: bytes
    rcpts: list[RcptProgress]


@dataclass(slots=True)
class MemoryDisk:
    """What survives a MemorySpool "crash": messages and the id high-water mark."""

    messages: dict[MessageId, _Entry] = field(default_factory=dict)
    next_id: int = 1
    #: While True, stores fail with SpoolFullError (simulates a full disk).
    full: bool = False


class MemorySpool:
    """A Spool held in a MemoryDisk; every call completes at once (after one loop turn)."""

    def __init__(self, disk: MemoryDisk | None = None) -> None:
        self.disk = disk if disk is not None else MemoryDisk()
        self._closed = False

    def _check_open(self) -> MemoryDisk:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        return self.disk

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        disk = self._check_open()
        await asyncio.sleep(0)  # like a real store, let other tasks run before the commit
        if disk.full:
            raise SpoolFullError("memory spool is full")
        msg_id = disk.next_id
        disk.next_id += 1
        disk.messages[msg_id] = _Entry(envelope, bytes(body), [FRESH] * len(envelope.recipients))
        return msg_id

    async def mark(self, updates: Sequence[RcptUpdate]) -> None:
        disk = self._check_open()
        await asyncio.sleep(0)
        for u in updates:
            entry = disk.messages.get(u.msg_id)
            if entry is not None and u.rcpt_index < len(entry.rcpts):
                entry.rcpts[u.rcpt_index] = u.progress()

    async def load_body(self, msg_id: MessageId) -> bytes:
        disk = self._check_open()
        await asyncio.sleep(0)
        entry = disk.messages.get(msg_id)
        if entry is None:
            raise UnknownMessageError(f"message {msg_id} is not in the spool")
        return entry.body

    async def remove(self, msg_id: MessageId) -> None:
        disk = self._check_open()
        await asyncio.sleep(0)
        disk.messages.pop(msg_id, None)

    def recover(self) -> Iterator[SpooledMessage]:
        disk = self._check_open()
        snapshot = [
            SpooledMessage(msg_id=mid, envelope=e.envelope, rcpts=tuple(e.rcpts))
            for mid, e in sorted(disk.messages.items())
        ]
        return iter(snapshot)

    async def close(self) -> None:
        self._closed = True

    async def abandon(self) -> None:
        """Stop as a crash would (nothing is pending in memory, so the same as close)."""
        self._closed = True
