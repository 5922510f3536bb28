"""Delivery outcomes waiting to be made durable, and the flush that writes them (D4).

The delivery manager records what each turn decides — a recipient's new state
(:meth:`PendingOutcomes.mark`), a final state that may finish its message
(:meth:`PendingOutcomes.final`) — and a background flush makes it durable with the DSNs and
accounting records :class:`~sluice.daemon.notices.Notices` collected, in the order the test
plan's D4 needs (see :meth:`PendingOutcomes.flush`).

Public names: PendingOutcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sluice.daemon.notices import Notices
from sluice.errors import SpoolError
from sluice.message import MessageId, RcptState
from sluice.spool import UnknownMessageError
from sluice.spool.base import RcptUpdate, Spool

if TYPE_CHECKING:
    from sluice.daemon.lifecycle import Daemon

__all__ = ["PendingOutcomes"]

log = logging.getLogger("sluice.delivery")


class PendingOutcomes:
    """Marks and finished messages of one daemon, until a flush makes them durable."""

    def __init__(self, daemon: Daemon, notices: Notices) -> None:
        self.d = daemon
        self.notices = notices
        self.updates: list[RcptUpdate] = []
        self.finished: list[MessageId] = []
        self._lock = asyncio.Lock()

    def pending(self) -> bool:
        """Something waits for a flush (marks, removals, DSNs or accounting records)."""
        notices = self.notices
        return bool(self.updates or self.finished or notices.records or notices.dsn_jobs)

    def mark(
        self,
        msg_id: MessageId,
        rcpts: Sequence[int],
        state: RcptState,
        text: str,
        *,
        attempts: int = 0,
        next_attempt: float | None = None,
    ) -> None:
        for index in rcpts:
            self.updates.append(
                RcptUpdate(
                    msg_id=msg_id,
                    rcpt_index=index,
                    state=state,
                    attempts=attempts,
                    next_attempt=next_attempt,
                    detail=text[:500],
                )
            )

    def final(self, msg_id: MessageId, rcpts: Sequence[int], state: RcptState, text: str) -> None:
        """A final state; the message is finished once all its recipients have one."""
        self.mark(msg_id, rcpts, state, text)
        left = self.d.remaining.get(msg_id)
        if left is None:
            return
        left -= len(rcpts)
        if left <= 0:
            del self.d.remaining[msg_id]
            self.finished.append(msg_id)
        else:
            self.d.remaining[msg_id] = left

    async def flush(self, spool: Spool | None) -> None:
        """Make the outcomes so far durable, in the order D4 needs.

        One snapshot of the pending DSNs, marks and finished messages is taken up front;
        what arrives while this flush awaits waits for the next one. So a message is removed
        only after its DSN is queued. A finished message's own marks are not written: its
        removal is one atomic commit that makes every recipient's outcome durable at once
        (a crash before it means a duplicate, never a loss — D4); if the removal fails, its
        marks are written instead before any accounting record claims the outcome. A spool
        failure puts the snapshot back for the next flush: nothing is forgotten, nothing is
        removed early.
        """
        if spool is None:
            return
        notices = self.notices
        async with self._lock:
            jobs, notices.dsn_jobs = notices.dsn_jobs, []
            updates, self.updates = self.updates, []
            finished, self.finished = self.finished, []
            records, notices.records = notices.records, []
            failed_jobs = await notices.send_dsns(jobs) if jobs else []
            waiting = {job[0] for job in failed_jobs}
            removable = [m for m in finished if m not in waiting]
            gone = set(removable)
            marks = [u for u in updates if u.msg_id not in gone] if gone else updates
            if marks:
                try:
                    await spool.mark(marks)
                except SpoolError as exc:
                    log.error("spool: recipient updates not written, retrying: %s", exc)
                    notices.dsn_jobs[:0] = failed_jobs
                    self.updates[:0] = updates
                    self.finished[:0] = finished
                    notices.records[:0] = records
                    return
            notices.dsn_jobs[:0] = failed_jobs
            self.finished[:0] = [m for m in finished if m in waiting]
            results = await _remove_all(spool, removable)
            kept: set[MessageId] = set()
            for msg_id, result in zip(removable, results, strict=True):
                if isinstance(result, SpoolError) and not isinstance(result, UnknownMessageError):
                    log.error("spool: message %d not removed, retrying: %s", msg_id, result)
                    self.finished.append(msg_id)
                    kept.add(msg_id)
                    continue
                self.d.envelopes.pop(msg_id, None)
                self.d.bodies.discard(msg_id)
                notices.sizes.pop(msg_id, None)
            if kept and not await self._mark_kept(spool, [u for u in updates if u.msg_id in kept]):
                notices.records[:0] = records
                return
            acct = self.d.acct
            if acct is not None:
                # Written only now: a record never claims an outcome the spool might forget.
                for record in records:
                    acct.record(record)
                acct.flush()

    async def _mark_kept(self, spool: Spool, updates: list[RcptUpdate]) -> bool:
        """Write the marks of finished messages whose removal failed; False if that failed
        too (the marks wait for the next flush, and so do its accounting records)."""
        try:
            await spool.mark(updates)
        except SpoolError as exc:
            log.error("spool: recipient updates not written, retrying: %s", exc)
            self.updates[:0] = updates
            return False
        return True


async def _remove_all(spool: Spool, ids: list[MessageId]) -> list[BaseException | None]:
    """Remove ``ids`` (one batch of the spool's group commit); per id None or the error.
    A spool with ``remove_nowait`` (both durable spools) costs a future per id, not a task."""
    nowait: Any = getattr(spool, "remove_nowait", None)
    if nowait is None:
        return list(await asyncio.gather(*(spool.remove(m) for m in ids), return_exceptions=True))
    pending: list[asyncio.Future[None] | BaseException] = []
    for msg_id in ids:
        try:
            pending.append(nowait(msg_id))
        except SpoolError as exc:
            pending.append(exc)
    results: list[BaseException | None] = []
    for item in pending:
        if isinstance(item, BaseException):
            results.append(item)
            continue
        try:
            await item
        except Exception as exc:
            results.append(exc)
        else:
            results.append(None)
    return results
