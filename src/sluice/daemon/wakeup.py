"""Wakeup: a flag coroutines can wait for, for the delivery manager's turn loop and flusher.

It answers ``set``, ``clear``, ``is_set`` and ``wait`` as ``asyncio.Event`` does. Why not
``asyncio.Event`` itself: it is Python code, and the manager sets, clears and waits on its
events several times per message (every hand-off and every finished delivery wakes the
planner); this module is compiled with the rest of the per-message path, so each of those
calls is a native call and ``wait`` is one future.

Public names: Wakeup.
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    """``asyncio.Event``'s interface for waiters on the running loop."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter (no-op when already set)."""
        if self._flag:
            return
        self._flag = True
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._flag:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done() or waiter.cancelled():
                self._forget(waiter)

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiter in waiters:
            waiters.remove(waiter)
