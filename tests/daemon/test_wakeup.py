"""Wakeup behaves as asyncio.Event for the manager's uses: set, clear, is_set, wait."""

from __future__ import annotations

import asyncio

from sluice.daemon.wakeup import Wakeup


def test_wait_returns_at_once_when_set_and_blocks_when_cleared() -> None:
    async def main() -> None:
        w = Wakeup()
        assert not w.is_set()
        w.set()
        assert w.is_set()
        await asyncio.wait_for(w.wait(), 1.0)
        w.clear()
        assert not w.is_set()
        waiter = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        w.set()
        await asyncio.wait_for(waiter, 1.0)

    asyncio.run(main())


def test_set_wakes_every_waiter() -> None:
    async def main() -> None:
        w = Wakeup()
        waiters = [asyncio.ensure_future(w.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(t.done() for t in waiters)
        w.set()
        await asyncio.wait_for(asyncio.gather(*waiters), 1.0)

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_disturb_the_next() -> None:
    async def main() -> None:
        w = Wakeup()
        first = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert first.cancelled()
        second = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        assert not second.done()
        w.set()
        await asyncio.wait_for(second, 1.0)
        assert second.result() is None

    asyncio.run(main())


def test_a_timer_can_set_it() -> None:
    async def main() -> None:
        w = Wakeup()
        loop = asyncio.get_running_loop()
        handle = loop.call_later(0.01, w.set)
        try:
            await asyncio.wait_for(w.wait(), 2.0)
        finally:
            handle.cancel()
        assert w.is_set()

    asyncio.run(main())
