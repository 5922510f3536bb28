"""A time-ordered queue of items, bucketed by whole second: push, then pop what is due.

KumoMTA's ``timeq`` shape with the time passed in: :meth:`TimeQ.pop_due` answers
``Ready`` (the items due at ``now``), ``Sleep`` (seconds until the next is due) or
``EMPTY``. Items are grouped in buckets keyed by their due time rounded *up* to the
resolution (1 s by default), so an item is never returned before its due time, a million
items due in the same second cost one heap entry, and each item costs one list slot.

There is no removal: callers that cancel or reschedule an item leave the old reference in
place and skip it when it comes out (each scheduler entry knows its own due time and state).

Public names: TimeQ, Ready, Sleep, Empty, EMPTY, PopResult. ``TimeQ(resolution)`` raises
``ValueError`` for a resolution that is not positive.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["EMPTY", "Empty", "PopResult", "Ready", "Sleep", "TimeQ"]

T = TypeVar("T")

#: Bucket width in seconds. Retry delays are minutes to hours (powermta.md §2.3) and the
#: jitter spreads them over seconds, so one-second buckets lose nothing and keep the heap short.
DEFAULT_RESOLUTION = 1.0


class Ready(Generic[T]):  # noqa: PLW1641 (holds a list: unhashable, as a list is)
    """Items whose due time has come, oldest bucket first.

    A plain class rather than a frozen dataclass: mypyc cannot compile a generic dataclass,
    and this module is compiled (it runs several times per message). Compared by its items.
    """

    __slots__ = ("items",)

    def __init__(self, *, items: list[T]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ready) and self.items == other.items

    def __repr__(self) -> str:
        return f"Ready(items={self.items!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sleep:
    """Nothing is due; the earliest item is due in ``seconds``."""

    seconds: float

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, seconds: float) -> None:
        object.__setattr__(self, "seconds", seconds)


@dataclass(frozen=True, slots=True)
class Empty:
    """The queue holds nothing."""


#: The one ``Empty`` value.
EMPTY = Empty()

PopResult = Ready[T] | Sleep | Empty


class TimeQ(Generic[T]):
    """Items keyed by due time; ``pop_due(now)`` returns every item due at ``now``."""

    __slots__ = ("_buckets", "_count", "_keys", "_resolution", "_times")

    def __init__(self, resolution: float = DEFAULT_RESOLUTION) -> None:
        if not resolution > 0:
            raise ValueError("resolution must be positive")
        self._resolution = resolution
        self._buckets: dict[int, list[T]] = {}
        #: One float per bucket, shared by every item pushed into it (saves a float per item).
        self._times: dict[int, float] = {}
        self._keys: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        """Number of references held (cancelled ones included until popped)."""
        return self._count

    def round_up(self, due: float) -> float:
        """The time ``due`` will actually be released at: rounded up to the resolution."""
        return math.ceil(due / self._resolution) * self._resolution

    def push(self, due: float, item: T) -> float:
        """Queue ``item`` for ``due``; return the (rounded-up) time it will come out at."""
        key = math.ceil(due / self._resolution)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [item]
            heapq.heappush(self._keys, key)
            at = self._times[key] = key * self._resolution
        else:
            bucket.append(item)
            at = self._times[key]
        self._count += 1
        return at

    def next_due(self) -> float | None:
        """The earliest release time, or None when empty."""
        return self._keys[0] * self._resolution if self._keys else None

    def pop_due(self, now: float) -> PopResult[T]:
        """Remove and return everything due at ``now`` (or say how long to sleep)."""
        keys = self._keys
        if not keys:
            return EMPTY
        limit = now / self._resolution
        if keys[0] > limit:
            return Sleep(seconds=keys[0] * self._resolution - now)
        items: list[T] = []
        while keys and keys[0] <= limit:
            key = heapq.heappop(keys)
            del self._times[key]
            items.extend(self._buckets.pop(key))
        self._count -= len(items)
        return Ready(items=items)

    def drain(self) -> list[T]:
        """Remove and return everything, due or not, in due order."""
        items: list[T] = []
        while self._keys:
            items.extend(self._buckets.pop(heapq.heappop(self._keys)))
        self._times.clear()
        self._count = 0
        return items
