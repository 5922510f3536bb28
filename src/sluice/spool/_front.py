"""The write side both durable spools share: ids handed out in order, every write through
one :class:`~sluice.spool._groupcommit.GroupCommitter` of :mod:`sluice.spool._sqlbatch` ops.

Public names: CommitFront (a base class; the subclass sets ``_wq``, ``_next_id`` and
``_closed``). Raises: SpoolUnavailableError once the spool is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sluice.errors import SpoolUnavailableError
from sluice.message import Envelope, MessageId
from sluice.spool._groupcommit import BatchStats, GroupCommitter
from sluice.spool._sqlbatch import Mark, Remove, Store, WriteOp
from sluice.spool.base import RcptUpdate

__all__ = ["CommitFront"]


class CommitFront:
    """``store``, ``store_nowait``, ``mark``, ``remove``, ``remove_nowait`` and ``write_stats``
    of a spool."""

    _wq: GroupCommitter[WriteOp]
    _next_id: int
    _closed: bool

    @property
    def write_stats(self) -> BatchStats:
        """Batches committed and operations carried (for benchmarks and tests)."""
        return self._wq.stats

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        result: MessageId = await self.store_nowait(envelope, body)
        return result

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]:
        """:meth:`store` without a coroutine: the future resolves once the message is
        durable (for callers that batch many stores, e.g. intake workers' hand-offs)."""
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        msg_id = self._next_id
        self._next_id = msg_id + 1
        future: asyncio.Future[MessageId] = self._wq.submit(
            Store(msg_id=msg_id, envelope=envelope, body=bytes(body))
        )
        return future

    async def mark(self, updates: Sequence[RcptUpdate]) -> None:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        if updates:
            await self._wq.submit(Mark(updates=tuple(updates)))

    async def remove(self, msg_id: MessageId) -> None:
        await self.remove_nowait(msg_id)

    def remove_nowait(self, msg_id: MessageId) -> asyncio.Future[None]:
        """:meth:`remove` without a coroutine: the future resolves once the removal is
        durable (for callers that remove many messages at once, e.g. the delivery manager)."""
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        future: asyncio.Future[None] = self._wq.submit(Remove(msg_id=msg_id))
        return future
