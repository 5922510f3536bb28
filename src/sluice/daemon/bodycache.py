"""Bodies of freshly stored messages, kept in memory for their first delivery.

An intake worker hands the queue manager each message's bytes; the manager stores them
and, most of the time, delivers them within milliseconds. Reading them back from the spool
costs a reader-thread hand-off and an SQLite read per message, so the manager keeps the
newest bodies in a byte-bounded cache. It is only a cache: the spool stays the truth, a
miss (an old, recovered or evicted message) reads the spool, and a message leaves the
cache when it leaves the spool.

Public names: BodyCache, DEFAULT_BUDGET.
"""

from __future__ import annotations

from collections import OrderedDict

from sluice.message import MessageId

__all__ = ["DEFAULT_BUDGET", "BodyCache"]

#: Bytes of bodies kept (32 MiB: ~16,000 messages of 2 KB, several seconds of a fast relay).
DEFAULT_BUDGET = 32 * 1024 * 1024


class BodyCache:
    """Newest-first bodies by message id, evicting the oldest beyond ``budget`` bytes."""

    __slots__ = ("_bodies", "_size", "budget", "hits", "misses")

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._bodies: OrderedDict[MessageId, bytes] = OrderedDict()
        self._size = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._bodies)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def put(self, msg_id: MessageId, body: bytes) -> None:
        if len(body) > self.budget:
            return
        old = self._bodies.pop(msg_id, None)
        if old is not None:
            self._size -= len(old)
        self._bodies[msg_id] = body
        self._size += len(body)
        while self._size > self.budget:
            _, evicted = self._bodies.popitem(last=False)
            self._size -= len(evicted)

    def get(self, msg_id: MessageId) -> bytes | None:
        body = self._bodies.get(msg_id)
        if body is None:
            self.misses += 1
        else:
            self.hits += 1
        return body

    def discard(self, msg_id: MessageId) -> None:
        body = self._bodies.pop(msg_id, None)
        if body is not None:
            self._size -= len(body)
